"""Experiment use cases: submit (validated, within the limits, idempotent, enqueued after
commit), read, list, metrics, cancel."""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import logging
from datetime import datetime
from typing import Any

from celery import Celery
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import UnitOfWork
from api.errors import (
    BrokerUnavailable,
    ExperimentFinished,
    ExperimentNotFound,
    IdempotencyKeyReused,
    InvalidCursor,
    TooManyQueued,
)
from api.schemas import epoch_row
from api.services.datasets import check_upload_exists, upload_info
from api.services.webhooks import check_destinations
from core.enqueue import enqueue_group, queue_for
from core.repositories import experiments as repo
from core.repositories import metrics as metrics_repo
from core.repositories import quotas
from core.settings import Settings
from core.tables import TERMINAL_STATUSES, Experiment
from ml.cells import csv_cell
from ml.datasets import split_sizes
from ml.spec import CheckedSpec, ExperimentSpec, SpecInvalid, validate_spec

log = logging.getLogger("labtrain.api")

RETRY_AFTER_SECONDS = 30  # a queue that is full now has room once workers claim a few


# -- limits ------------------------------------------------------------------------------------


def total_work(checked: CheckedSpec) -> tuple[int, int]:
    """(epochs × training samples × parameters, training samples) of a checked spec."""
    spec = checked.spec
    train_rows = split_sizes(checked.info.n_samples, spec.dataset.split.val, spec.dataset.split.test)["train"]
    return spec.epochs * train_rows * checked.param_count, train_rows


def named_limits(exc: SpecInvalid, settings: Settings) -> SpecInvalid:
    """The same refusal, with a parameter-count item naming its setting (ml.spec knows no environment)."""
    limit = f"limit of {settings.max_params:,}"
    errors = [
        {**e, "msg": e["msg"].replace(limit, f"{limit} (LABTRAIN_MAX_PARAMS)", 1)}
        if e.get("type") == "too_many_parameters"
        else e
        for e in exc.errors
    ]
    return type(exc)(errors)


def work_error(checked: CheckedSpec, settings: Settings) -> dict[str, Any] | None:
    """The 422 item of a spec whose total work is above LABTRAIN_MAX_TOTAL_WORK, else None."""
    work, train_rows = total_work(checked)
    if work <= settings.max_total_work:
        return None
    return {
        "loc": [],
        "msg": f"the total work of {checked.spec.epochs:,} epochs × {train_rows:,} training samples × "
        f"{checked.param_count:,} parameters = {work:.3g} is above the limit of {settings.max_total_work:.3g} "
        "(LABTRAIN_MAX_TOTAL_WORK); train fewer epochs, on fewer samples or a smaller network",
        "type": "too_much_work",
    }


def check_queue_room(session: Session, settings: Settings, owner: str, adding: int) -> None:
    """Refuse (429, Retry-After) what would take the owner's queued experiments past the limit."""
    queued = quotas.queued_count(session, owner)
    limit = settings.max_queued_per_owner
    if queued + adding > limit:
        what = f"{adding} more experiments" if adding > 1 else "another experiment"
        raise TooManyQueued(
            f"you have {queued} experiments queued; {what} would exceed the limit of {limit} "
            f"(LABTRAIN_MAX_QUEUED_PER_OWNER); retry once some have started",
            retry_after=RETRY_AFTER_SECONDS,
        )


def _request_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def split_annotations(normalized: dict[str, Any]) -> tuple[dict[str, Any], list[str], str | None]:
    """(the spec to store, its tags, its notes): tags and notes live in their own columns, so a
    PATCH changes them without rewriting the spec, and the model's stored spec never holds them."""
    stored = {k: v for k, v in normalized.items() if k not in ("tags", "notes")}
    return stored, list(normalized.get("tags") or []), normalized.get("notes")


def annotated_hash(normalized: dict[str, Any]) -> str:
    """The Idempotency-Key's request hash: the tags and notes are part of the request, but a spec
    without them hashes as it did before they existed (a key used then still replays)."""
    return _request_hash({k: v for k, v in normalized.items() if k not in ("tags", "notes") or v})


def enqueue_after_commit(uow: UnitOfWork, celery: Celery, experiment: Experiment) -> None:
    enqueue_group_after_commit(uow, celery, [experiment])


def enqueue_group_after_commit(uow: UnitOfWork, celery: Celery, experiments: list[Experiment]) -> None:
    """Send these experiments after the commit: one task, or one group task training them
    together as one stacked network (they share a queue and `ml.grouping.group_key`)."""
    ids, queue = [e.id for e in experiments], experiments[0].queue

    def send() -> None:
        try:
            enqueue_group(celery, ids, queue)
        except Exception as exc:  # the rows are committed: say how to get them queued
            log.exception("could not enqueue experiments %s", ids)
            raise BrokerUnavailable(
                f"experiment {', '.join(ids)} was stored but could not be queued ({type(exc).__name__}: {exc}); "
                "send the same request again with the same Idempotency-Key once Redis answers",
                experiment_id=ids[0],
            ) from exc

    uow.after_commit(send)


def create_experiment(
    uow: UnitOfWork,
    celery: Celery,
    settings: Settings,
    *,
    owner: str,
    spec: ExperimentSpec,
    idempotency_key: str | None,
) -> tuple[Experiment, bool]:
    """Validate and store a queued experiment, then enqueue it after the commit.

    Returns (experiment, created). A repeated Idempotency-Key with the same spec returns the
    first experiment (re-enqueued if still queued: a message lost before may be sent again,
    the claim makes duplicates harmless); with another spec it is refused."""
    try:
        checked = validate_spec(
            spec,
            max_params=settings.max_params,
            upload_info=upload_info(uow.session, owner),
            max_run_memory_bytes=settings.max_run_memory_bytes,
        )
    except SpecInvalid as exc:
        raise named_limits(exc, settings) from None
    if checked.spec.epochs > settings.max_epochs:
        raise SpecInvalid(
            [
                {
                    "loc": ["epochs"],
                    "msg": f"{checked.spec.epochs} epochs is above the limit of "
                    f"{settings.max_epochs} (LABTRAIN_MAX_EPOCHS)",
                    "type": "too_many_epochs",
                }
            ]
        )
    too_much = work_error(checked, settings)
    if too_much is not None:
        raise SpecInvalid([too_much])
    if checked.spec.notify is not None:
        check_destinations([(("notify", "url"), checked.spec.notify.url)], settings)
    normalized = checked.spec.model_dump(mode="json")
    digest = annotated_hash(normalized)
    normalized, tags, notes = split_annotations(normalized)
    if idempotency_key is not None:
        existing = repo.get_by_idempotency_key(uow.session, owner, idempotency_key)
        if existing is not None:
            return _replay(uow, celery, existing, digest, idempotency_key), False
    check_queue_room(uow.session, settings, owner, 1)
    try:
        experiment = repo.create(
            uow.session,
            owner=owner,
            name=checked.spec.name,
            spec=normalized,
            task=checked.task,
            param_count=checked.param_count,
            queue=queue_for(checked.spec.device, settings),
            idempotency_key=idempotency_key,
            request_hash=digest,
            dataset_id=checked.spec.dataset.id,
            tags=tags,
            notes=notes,
        )
    except IntegrityError:
        uow.session.rollback()  # a concurrent request with the same key won the insert, or the upload went
        check_upload_exists(uow.session, owner, checked.spec.dataset.id)  # deleted since looked up: 404
        if idempotency_key is None:
            raise
        existing = repo.get_by_idempotency_key(uow.session, owner, idempotency_key)
        if existing is None:
            raise
        return _replay(uow, celery, existing, digest, idempotency_key), False
    enqueue_after_commit(uow, celery, experiment)
    return experiment, True


def _replay(uow: UnitOfWork, celery: Celery, existing: Experiment, digest: str, key: str) -> Experiment:
    if existing.request_hash != digest:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was already used for experiment {existing.id} with a different spec; "
            "use a new key for a new experiment"
        )
    if existing.status == "queued":
        enqueue_after_commit(uow, celery, existing)
    return existing


def get_experiment(session: Session, owner: str, experiment_id: str) -> Experiment:
    experiment = repo.get(session, experiment_id, owner)
    if experiment is None:
        raise ExperimentNotFound(f"no experiment with id {experiment_id!r}")
    return experiment


def queue_position(session: Session, experiment: Experiment) -> int | None:
    """Experiments queued ahead of this one on its queue; None once a worker has claimed it."""
    return quotas.queue_position(session, experiment) if experiment.status == "queued" else None


def encode_cursor(row: Experiment) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, last_id = json.loads(raw)
        return datetime.fromisoformat(created_at), str(last_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor(f"cursor {cursor!r} is not one this API returned; pass a next_cursor unchanged") from exc


def list_experiments(
    session: Session,
    owner: str,
    *,
    limit: int,
    status: str | None,
    sweep_id: str | None,
    cursor: str | None,
    tags: list[str] | None = None,
) -> tuple[list[Experiment], str | None]:
    """A page, newest first, and the cursor of the next page (None on the last)."""
    before = decode_cursor(cursor) if cursor else None
    rows = repo.list_page(
        session, owner=owner, limit=limit + 1, status=status, sweep_id=sweep_id, tags=tags, before=before
    )
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1])
    return rows, None


def read_metrics(session: Session, owner: str, experiment_id: str) -> list[dict[str, Any]]:
    get_experiment(session, owner, experiment_id)
    return [epoch_row(r) for r in metrics_repo.list_epochs(session, experiment_id)]


def metrics_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with a header row: epoch, train_loss, val_loss, the metrics (in first-seen order), seconds."""
    columns: list[str] = ["epoch", "train_loss", "val_loss"]
    for row in rows:
        columns += [k for k in row if k not in columns and k != "seconds"]
    columns.append("seconds")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)  # never a formula
    return out.getvalue()


def cancel_experiment(uow: UnitOfWork, owner: str, experiment_id: str) -> Experiment:
    """queued → cancelled at once; running → flagged, its worker stops at the next epoch
    boundary; finished → ExperimentFinished."""
    session = uow.session
    experiment = get_experiment(session, owner, experiment_id)
    if not repo.cancel_queued(session, experiment_id) and not repo.request_cancel(session, experiment_id):
        session.refresh(experiment)
        if experiment.status in TERMINAL_STATUSES:
            raise ExperimentFinished(f"experiment {experiment_id} already ended as {experiment.status}")
    session.refresh(experiment)
    return experiment
