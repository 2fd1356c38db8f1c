"""SQL for experiments: creation, reads, listing, cancel, sweeps' members, and the reconciler's
scan. A worker's run of an experiment (claim, progress, finish) is in `runs.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from core.repositories import rowcount
from core.repositories import webhooks as webhooks_repo
from core.repositories.tags import has_tag
from core.tables import Experiment, Sweep, utcnow


def create(
    session: Session,
    *,
    owner: str,
    name: str,
    spec: dict[str, Any],
    task: str,
    param_count: int,
    queue: str,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    sweep_id: str | None = None,
    dataset_id: str | None = None,
    tags: list[str] | None = None,
    notes: str | None = None,
) -> Experiment:
    """Insert a queued experiment (flushed, so a duplicate idempotency key raises IntegrityError here)."""
    experiment = Experiment(
        owner=owner,
        name=name,
        status="queued",
        spec=spec,
        task=task,
        param_count=param_count,
        queue=queue,
        epochs_done=0,
        attempt=0,
        cancel_requested=False,
        test_evaluations=0,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        sweep_id=sweep_id,
        dataset_id=dataset_id,
        tags=tags or [],
        notes=notes,
        created_at=utcnow(),
    )
    session.add(experiment)
    session.flush()
    return experiment


def get(session: Session, experiment_id: str, owner: str | None = None) -> Experiment | None:
    """One experiment; with `owner`, only if it belongs to that owner."""
    stmt = select(Experiment).where(Experiment.id == experiment_id)
    if owner is not None:
        stmt = stmt.where(Experiment.owner == owner)
    return session.scalars(stmt).one_or_none()


def get_by_idempotency_key(session: Session, owner: str, key: str) -> Experiment | None:
    stmt = select(Experiment).where(Experiment.owner == owner, Experiment.idempotency_key == key)
    return session.scalars(stmt).one_or_none()


def list_page(
    session: Session,
    *,
    owner: str,
    limit: int,
    status: str | None = None,
    sweep_id: str | None = None,
    tags: list[str] | None = None,
    before: tuple[datetime, str] | None = None,
) -> list[Experiment]:
    """Newest first; `before` is the (created_at, id) of the last row of the previous page.
    Each of `tags` must be the experiment's own or its sweep's."""
    stmt = select(Experiment).where(Experiment.owner == owner)
    if status is not None:
        stmt = stmt.where(Experiment.status == status)
    if sweep_id is not None:
        stmt = stmt.where(Experiment.sweep_id == sweep_id)
    for tag in tags or []:
        tagged_sweeps = select(Sweep.id).where(Sweep.owner == owner, has_tag(session, Sweep.tags, tag))
        stmt = stmt.where(or_(has_tag(session, Experiment.tags, tag), Experiment.sweep_id.in_(tagged_sweeps)))
    if before is not None:
        created_at, last_id = before
        stmt = stmt.where(
            or_(
                Experiment.created_at < created_at,
                and_(Experiment.created_at == created_at, Experiment.id < last_id),
            )
        )
    stmt = stmt.order_by(Experiment.created_at.desc(), Experiment.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def cancel_queued(session: Session, experiment_id: str) -> bool:
    """queued → cancelled at once; False when it was not queued any more."""
    result = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
    )
    if rowcount(result) != 1:
        return False
    webhooks_repo.record_terminal(session, [experiment_id])  # the outbox, in the status's transaction
    return True


def request_cancel(session: Session, experiment_id: str) -> bool:
    """Flag a running experiment; its worker stops at the next epoch boundary."""
    result = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status == "running")
        .values(cancel_requested=True)
    )
    return rowcount(result) == 1


# -- sweeps: their members are experiments with `sweep_id` set --------------------------------


@dataclass(frozen=True)
class NewExperiment:
    """One experiment to insert with `create_many` (a sweep's member)."""

    name: str
    spec: dict[str, Any]
    task: str
    param_count: int
    queue: str
    idempotency_key: str | None = None
    request_hash: str | None = None
    tags: list[str] = field(default_factory=list)
    notes: str | None = None


def create_many(session: Session, *, owner: str, sweep_id: str, rows: list[NewExperiment]) -> list[Experiment]:
    """Insert the queued members of a sweep in one flush (a repeated idempotency key raises
    IntegrityError here); returned in the order given."""
    now = utcnow()
    experiments = [
        Experiment(
            owner=owner,
            name=row.name,
            status="queued",
            spec=row.spec,
            task=row.task,
            param_count=row.param_count,
            queue=row.queue,
            epochs_done=0,
            attempt=0,
            cancel_requested=False,
            test_evaluations=0,
            idempotency_key=row.idempotency_key,
            request_hash=row.request_hash,
            sweep_id=sweep_id,
            tags=row.tags,
            notes=row.notes,
            created_at=now,
        )
        for row in rows
    ]
    session.add_all(experiments)
    session.flush()
    return experiments


def list_in_sweep(session: Session, sweep_id: str) -> list[Experiment]:
    return list(session.scalars(select(Experiment).where(Experiment.sweep_id == sweep_id)))


def status_counts(session: Session, sweep_ids: list[str]) -> dict[str, dict[str, int]]:
    """sweep id → {status: members}, for every sweep given (one grouped query)."""
    counts: dict[str, dict[str, int]] = {sweep_id: {} for sweep_id in sweep_ids}
    if not sweep_ids:
        return counts
    stmt = (
        select(Experiment.sweep_id, Experiment.status, func.count())
        .where(Experiment.sweep_id.in_(sweep_ids))
        .group_by(Experiment.sweep_id, Experiment.status)
    )
    for sweep_id, status, n in session.execute(stmt):
        if sweep_id is not None:
            counts[sweep_id][status] = int(n)
    return counts


def cancel_queued_in_sweep(session: Session, sweep_id: str) -> int:
    """Every queued member → cancelled at once; returns how many. (The sweep's own `finished`
    event is the cancel's last step: `sweeps.mark_cancelled` takes the sweep row after the members.)"""
    cancelled = list(
        session.scalars(
            update(Experiment)
            .where(Experiment.sweep_id == sweep_id, Experiment.status == "queued")
            .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
            .returning(Experiment.id)
            .execution_options(synchronize_session=False)
        )
    )
    webhooks_repo.record_terminal(session, cancelled, sweeps=False)
    return len(cancelled)


def request_cancel_in_sweep(session: Session, sweep_id: str) -> int:
    """Flag every running member; each worker stops at its next epoch boundary. Returns how many."""
    result = session.execute(
        update(Experiment)
        .where(Experiment.sweep_id == sweep_id, Experiment.status == "running")
        .values(cancel_requested=True)
    )
    return rowcount(result)


# -- the reconciler (worker/reconciler.py) ---------------------------------------------------


@dataclass(frozen=True)
class Unfinished:
    """An accepted experiment that may have lost its message: what re-enqueueing it needs."""

    id: str
    status: str
    queue: str
    sweep_id: str | None
    spec: dict[str, Any]


def list_possibly_lost(
    session: Session, *, queued_before: datetime, stale_before: datetime, limit: int
) -> list[Unfinished]:
    """Queued experiments created before `queued_before`, and running ones whose heartbeat is
    older than `stale_before` (their worker may be gone), oldest first, at most `limit`."""
    stmt = (
        select(Experiment.id, Experiment.status, Experiment.queue, Experiment.sweep_id, Experiment.spec)
        .where(
            or_(
                and_(Experiment.status == "queued", Experiment.created_at < queued_before),
                and_(
                    Experiment.status == "running",
                    or_(Experiment.heartbeat_at < stale_before, Experiment.heartbeat_at.is_(None)),
                ),
            )
        )
        .order_by(Experiment.created_at, Experiment.id)
        .limit(limit)
    )
    return [Unfinished(*row) for row in session.execute(stmt)]
