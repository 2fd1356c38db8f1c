"""Sweep use cases: submit (every member validated first, stored in one transaction, enqueued
after the commit, idempotent), read, list, cancel; the study table is in sweep_tables.py.

A sweep row keeps the accepted request and its member list (`spec = {"request", "request_hash",
"members": [{"experiment_id", "name", "row", "repeat"}]}`); its members are ordinary experiments
with `sweep_id` set. Its status is derived from the members' on every read: `running` while any
is queued or running, then `finished`; `cancelled` is stored by the cancel.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any

from celery import Celery
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import UnitOfWork
from api.errors import IdempotencyKeyReused, SweepFinished, SweepNotFound
from api.schemas import SweepMemberRead, SweepRead, SweepStatus, SweepTableRead
from api.services.datasets import check_upload_exists, upload_info
from api.services.experiments import (
    check_queue_room,
    decode_cursor,
    enqueue_after_commit,
    enqueue_group_after_commit,
    named_limits,
    split_annotations,
    work_error,
)
from api.services.sweep_tables import Table, build_table
from api.services.tagging import base_annotations
from api.services.webhooks import check_destinations
from core.enqueue import queue_for
from core.repositories import datasets as datasets_repo
from core.repositories import experiments as experiments_repo
from core.repositories import sweeps as repo
from core.settings import Settings
from core.tables import Experiment, Sweep
from ml.grouping import plan_groups
from ml.sweeps import MAX_REPORTED_ERRORS, CheckedMember, SweepInvalid, SweepRequest, check_sweep

# A sweep's Idempotency-Key is stored on its first member, prefixed: the experiments' unique
# (owner, idempotency_key) constraint then makes two concurrent requests with one key create
# one sweep, without a column of its own on sweeps.
KEY_PREFIX = "sweep:"


def _request_hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def create_sweep(
    uow: UnitOfWork,
    celery: Celery,
    settings: Settings,
    *,
    owner: str,
    request: SweepRequest,
    idempotency_key: str | None,
) -> tuple[Sweep, bool]:
    """Validate every member, then store the sweep and its queued experiments in the request's
    one transaction and enqueue them after the commit. Returns (sweep, created).

    One bad row refuses the whole sweep (SweepInvalid, a 422 naming the row and the field)
    before anything is stored. A repeated Idempotency-Key with the same request returns the
    first sweep (its still-queued members sent again); with another request it is refused."""
    try:
        checked = check_sweep(
            request,
            max_params=settings.max_params,
            max_size=settings.max_sweep_size,
            max_epochs=settings.max_epochs,
            upload_info=upload_info(uow.session, owner),
            max_run_memory_bytes=settings.max_run_memory_bytes,
        )
    except SweepInvalid as exc:
        raise named_limits(exc, settings) from None
    _check_work(checked, settings)
    check_destinations(
        ([(("notify", "url"), request.notify.url)] if request.notify else [])
        + [(("base", "notify", "url"), c.checked.spec.notify.url) for c in checked if c.checked.spec.notify],
        settings,
    )
    accepted = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    digest = _request_hash(accepted)
    session = uow.session
    if idempotency_key is not None:
        first = experiments_repo.get_by_idempotency_key(session, owner, KEY_PREFIX + idempotency_key)
        if first is not None:
            return _replay(uow, celery, first, digest, idempotency_key), False
    check_queue_room(session, settings, owner, len(checked))  # the whole sweep, or none of it
    tags, notes = base_annotations(request.base)
    sweep = repo.create(
        session,
        owner=owner,
        name=request.name,
        spec={"request": accepted, "request_hash": digest},
        tags=tags,
        notes=notes,
    )
    rows = []
    for c in checked:
        spec, tags, notes = split_annotations(c.checked.spec.model_dump(mode="json"))
        rows.append(
            experiments_repo.NewExperiment(
                name=c.checked.spec.name,
                spec=spec,
                task=c.checked.task,
                param_count=c.checked.param_count,
                queue=queue_for(c.checked.spec.device, settings),
                tags=tags,
                notes=notes,
            )
        )
    if idempotency_key is not None:
        rows[0] = dataclasses.replace(rows[0], idempotency_key=KEY_PREFIX + idempotency_key, request_hash=digest)
    try:
        experiments = experiments_repo.create_many(session, owner=owner, sweep_id=sweep.id, rows=rows)
    except IntegrityError:
        if idempotency_key is None:
            raise
        session.rollback()  # a concurrent request with the same key won the insert
        first = experiments_repo.get_by_idempotency_key(session, owner, KEY_PREFIX + idempotency_key)
        if first is None:
            raise
        return _replay(uow, celery, first, digest, idempotency_key), False
    members = [
        {"experiment_id": e.id, "name": c.member.name, "row": c.member.row, "repeat": c.member.repeat}
        for e, c in zip(experiments, checked, strict=True)
    ]
    repo.set_spec(session, sweep, {**sweep.spec, "members": members})
    dataset_of = {e.id: c.checked.spec.dataset.id for e, c in zip(experiments, checked, strict=True)}
    try:
        datasets_repo.link(session, dataset_of)
    except IntegrityError:  # an upload was deleted since it was looked up (SQLite: no row lock)
        session.rollback()
        for dataset_id in set(dataset_of.values()):
            check_upload_exists(session, owner, dataset_id)
        raise
    by_id = {e.id: e for e in experiments}
    groups = plan_groups(
        [(e.id, c.checked) for e, c in zip(experiments, checked, strict=True)],
        max_members=settings.group_max_members,
        memory_bytes=settings.group_memory_bytes,
    )
    for group in groups:
        enqueue_group_after_commit(uow, celery, [by_id[str(i)] for i in group])
    return sweep, True


def _check_work(checked: list[CheckedMember], settings: Settings) -> None:
    """Refuse the sweep (naming each row) if a member's total work is above LABTRAIN_MAX_TOTAL_WORK."""
    errors: list[dict[str, Any]] = []
    rows: set[int] = set()
    for c in checked:
        error = work_error(c.checked, settings)
        if error is not None and c.member.row not in rows:
            rows.add(c.member.row)
            errors.append({**error, "loc": list(c.member.loc), "msg": f"row {c.member.name!r}: {error['msg']}"})
    if errors:
        raise SweepInvalid(errors[:MAX_REPORTED_ERRORS])


def _replay(uow: UnitOfWork, celery: Celery, first: Experiment, digest: str, key: str) -> Sweep:
    """The sweep whose first member carries the key, if it was created by the same request."""
    existing = repo.get(uow.session, first.sweep_id, first.owner) if first.sweep_id else None
    if existing is None or existing.spec.get("request_hash") != digest:
        what = f"sweep {existing.id}" if existing is not None else "another request"
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was already used for {what} with a different request; "
            "use a new key for a new sweep"
        )
    for experiment in experiments_repo.list_in_sweep(uow.session, existing.id):
        if experiment.status == "queued":  # a message lost before may be sent again; the claim dedupes
            enqueue_after_commit(uow, celery, experiment)
    return existing


def get_sweep(session: Session, owner: str, sweep_id: str) -> Sweep:
    sweep = repo.get(session, sweep_id, owner)
    if sweep is None:
        raise SweepNotFound(f"no sweep with id {sweep_id!r}")
    return sweep


def sweep_status(sweep: Sweep, counts: dict[str, int]) -> SweepStatus:
    if sweep.status == "cancelled":
        return "cancelled"
    return "running" if counts.get("queued", 0) + counts.get("running", 0) else "finished"


def to_read(sweep: Sweep, counts: dict[str, int]) -> SweepRead:
    members = [SweepMemberRead(**m) for m in sweep.spec.get("members", [])]
    request = sweep.spec.get("request", {})
    return SweepRead(
        id=sweep.id,
        name=sweep.name,
        status=sweep_status(sweep, counts),
        counts=counts,
        size=len(members),
        repeats=int(request.get("repeats", 1)),
        experiment_ids=[m.experiment_id for m in members],
        members=members,
        request=request,
        tags=sweep.tags,
        notes=sweep.notes,
        created_at=sweep.created_at,
    )


def read_sweep(session: Session, owner: str, sweep_id: str) -> SweepRead:
    sweep = get_sweep(session, owner, sweep_id)
    return to_read(sweep, experiments_repo.status_counts(session, [sweep.id])[sweep.id])


def _encode_cursor(sweep: Sweep) -> str:
    # The experiments' cursor format, so one decode_cursor reads both.
    raw = json.dumps([sweep.created_at.isoformat(), sweep.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def list_sweeps(
    session: Session, owner: str, *, limit: int, cursor: str | None, tags: list[str] | None = None
) -> tuple[list[SweepRead], str | None]:
    """A page, newest first, and the cursor of the next page (None on the last)."""
    before = decode_cursor(cursor) if cursor else None
    rows = repo.list_page(session, owner=owner, limit=limit + 1, tags=tags, before=before)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode_cursor(rows[-1])
    counts = experiments_repo.status_counts(session, [s.id for s in rows])
    return [to_read(s, counts[s.id]) for s in rows], next_cursor


def cancel_sweep(uow: UnitOfWork, owner: str, sweep_id: str) -> SweepRead:
    """Every queued member → cancelled at once, every running one stops at its next epoch
    boundary; the sweep is `cancelled`. A sweep whose members all ended → SweepFinished."""
    session = uow.session
    sweep = get_sweep(session, owner, sweep_id)
    # Queued first, then running: a member claimed between the two statements is still flagged.
    cancelled = experiments_repo.cancel_queued_in_sweep(session, sweep.id)
    flagged = experiments_repo.request_cancel_in_sweep(session, sweep.id)
    if not cancelled and not flagged and sweep.status != "cancelled":
        counts = experiments_repo.status_counts(session, [sweep.id])[sweep.id]
        raise SweepFinished(
            f"sweep {sweep.id} already finished ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); "
            "there is nothing to cancel"
        )
    repo.mark_cancelled(session, sweep.id)
    session.refresh(sweep)
    return read_sweep(session, owner, sweep.id)


def sweep_table(session: Session, owner: str, sweep_id: str) -> tuple[Table, SweepTableRead]:
    """The study table (for csv and markdown) and its JSON: one row per row name, the best by
    validation marked; test metrics never appear."""
    sweep = get_sweep(session, owner, sweep_id)
    experiments = experiments_repo.list_in_sweep(session, sweep.id)
    counts: dict[str, int] = {}
    for e in experiments:
        counts[e.status] = counts.get(e.status, 0) + 1
    repeats = int(sweep.spec.get("request", {}).get("repeats", 1))
    table = build_table(sweep.spec.get("members", []), experiments, repeats)
    read = SweepTableRead(
        sweep_id=sweep.id,
        name=sweep.name,
        status=sweep_status(sweep, counts),
        metric=table.metric,
        columns=table.columns,
        rows=table.rows,
    )
    return table, read
