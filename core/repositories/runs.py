"""SQL of a worker's run of an experiment: the claim, progress and heartbeats, control polls,
and the finish, for single and group runs.

Worker writes are fenced by `attempt`: a claim increments it, and every later write of that
run is conditional on it, so a run whose experiment was taken over can no longer write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, false, or_, select, true, update
from sqlalchemy.orm import Session

from core.repositories import rowcount
from core.repositories import webhooks as webhooks_repo
from core.tables import Experiment, utcnow


@dataclass(frozen=True)
class Claim:
    attempt: int
    resumed: bool  # the experiment had been running under an earlier attempt
    gave_up: bool = False  # every allowed attempt died: the run was ended instead (status failed or cancelled)


def claim(
    session: Session,
    experiment_id: str,
    *,
    worker: str,
    stale_before: datetime,
    takeover: bool,
    max_attempts: int | None = None,
) -> Claim | None:
    """The one conditional UPDATE that gives a run its experiment: queued → running, attempt + 1.

    A running experiment is taken over (to resume from its checkpoint) only when its heartbeat
    is older than `stale_before`, or when `takeover` says the message was redelivered because
    the process that held it died. A takeover of a run whose `max_attempts` attempts all died
    ends it instead (`failed`, or `cancelled` if that was asked) and returns a Claim with
    `gave_up`, so a run that kills its process is not delivered forever. Returns None when there
    was nothing to claim."""
    now = utcnow()
    running_but_lost = and_(
        Experiment.status == "running",
        or_(Experiment.heartbeat_at < stale_before, Experiment.heartbeat_at.is_(None), true() if takeover else false()),
    )
    if max_attempts is not None:
        given_up = session.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id, running_but_lost, Experiment.attempt >= max_attempts)
            .values(
                status=case((Experiment.cancel_requested, "cancelled"), else_="failed"),
                error=gave_up_error(max_attempts),
                worker=worker,
                heartbeat_at=now,
                finished_at=now,
            )
            .returning(Experiment.attempt)
        ).one_or_none()
        if given_up is not None:
            webhooks_repo.record_terminal(session, [experiment_id])
            return Claim(attempt=given_up[0], resumed=True, gave_up=True)
    row = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id, or_(Experiment.status == "queued", running_but_lost))
        .values(status="running", attempt=Experiment.attempt + 1, worker=worker, heartbeat_at=now)
        .returning(Experiment.attempt, Experiment.started_at)
    ).one_or_none()
    if row is None:
        return None
    attempt, started_at = row
    if started_at is None:
        session.execute(update(Experiment).where(Experiment.id == experiment_id).values(started_at=now))
    return Claim(attempt=attempt, resumed=attempt > 1)


def gave_up_error(max_attempts: int) -> str:
    """The error of a run ended by `claim` after every allowed attempt died."""
    times = "in its only attempt" if max_attempts == 1 else f"in each of its {max_attempts} attempts"
    return (
        f"the worker process running it died or stopped answering {times} (killed, out of memory or "
        f"crashed); it is not tried again (LABTRAIN_MAX_ATTEMPTS={max_attempts})"
    )


def _ours(experiment_id: str, attempt: int) -> Any:
    return and_(Experiment.id == experiment_id, Experiment.attempt == attempt, Experiment.status == "running")


def record_progress(
    session: Session,
    experiment_id: str,
    attempt: int,
    *,
    epochs_done: int,
    latest: dict[str, Any] | None,
    best: dict[str, Any] | None,
    served: dict[str, Any] | None = None,
    device: str | None = None,
) -> bool:
    """Progress and heartbeat of the run holding `attempt`; False when the run lost the experiment."""
    values: dict[str, Any] = {
        "epochs_done": epochs_done,
        "latest_metrics": latest,
        "best_metrics": best,
        "served_metrics": served,
        "heartbeat_at": utcnow(),
    }
    if device is not None:
        values["device"] = device
    result = session.execute(update(Experiment).where(_ours(experiment_id, attempt)).values(**values))
    return rowcount(result) == 1


def hold_many(session: Session, held: dict[str, int]) -> set[str]:
    """`touch` for several runs (experiment id → attempt) in one statement: the ids whose
    attempt still holds them, their rows locked until the caller commits."""
    if not held:
        return set()
    stmt = (
        update(Experiment)
        .where(
            Experiment.status == "running",
            or_(*(and_(Experiment.id == i, Experiment.attempt == a) for i, a in held.items())),
        )
        .values(heartbeat_at=utcnow())
        .returning(Experiment.id)
        .execution_options(synchronize_session=False)
    )
    return set(session.scalars(stmt))


@dataclass(frozen=True)
class Progress:
    """One run's progress for `record_progress_many`."""

    experiment_id: str
    epochs_done: int
    latest: dict[str, Any] | None
    best: dict[str, Any] | None
    served: dict[str, Any] | None = None


def record_progress_many(session: Session, progress: list[Progress]) -> None:
    """`record_progress` of several runs in one executemany, for runs the caller fenced with
    `hold_many` in this transaction (this statement checks no attempt)."""
    if progress:
        rows = [
            {
                "id": p.experiment_id,
                "epochs_done": p.epochs_done,
                "latest_metrics": p.latest,
                "best_metrics": p.best,
                "served_metrics": p.served,
            }
            for p in progress
        ]
        session.execute(update(Experiment), rows)  # ORM bulk UPDATE by primary key


def touch(session: Session, experiment_id: str, attempt: int) -> bool:
    """Refresh the heartbeat; True when `attempt` still holds the experiment (the row stays
    locked until the caller commits, so a write made in the same transaction is fenced)."""
    result = session.execute(update(Experiment).where(_ours(experiment_id, attempt)).values(heartbeat_at=utcnow()))
    return rowcount(result) == 1


def poll_control_many(session: Session, held: dict[str, int]) -> dict[str, tuple[bool, bool]]:
    """`poll_control` of several runs (experiment id → attempt) in one statement; an unknown id
    reads as (True, False)."""
    found: dict[str, tuple[bool, bool]] = dict.fromkeys(held, (True, False))
    if not held:
        return found
    stmt = select(Experiment.id, Experiment.cancel_requested, Experiment.attempt, Experiment.status).where(
        Experiment.id.in_(list(held))
    )
    for experiment_id, cancel, current_attempt, status in session.execute(stmt):
        found[experiment_id] = bool(cancel), current_attempt == held[experiment_id] and status == "running"
    return found


def poll_control(session: Session, experiment_id: str, attempt: int) -> tuple[bool, bool]:
    """(cancel requested, still held by this attempt), read in one statement."""
    row = session.execute(
        select(Experiment.cancel_requested, Experiment.attempt, Experiment.status).where(Experiment.id == experiment_id)
    ).one_or_none()
    if row is None:
        return True, False
    cancel, current_attempt, status = row
    return bool(cancel), current_attempt == attempt and status == "running"


def finish(
    session: Session,
    experiment_id: str,
    attempt: int,
    *,
    status: str,
    error: str | None = None,
    device: str | None = None,
    train_seconds: float | None = None,
    epochs_done: int | None = None,
    best: dict[str, Any] | None = None,
    served: dict[str, Any] | None = None,
) -> bool:
    """The one terminal status of the run holding `attempt`; False when it no longer held it.
    `served`: the validation metrics of the stored model (None: keep what progress wrote)."""
    values: dict[str, Any] = {"status": status, "error": error, "finished_at": utcnow(), "heartbeat_at": utcnow()}
    if device is not None:
        values["device"] = device
    if train_seconds is not None:
        values["train_seconds"] = train_seconds
    if epochs_done is not None:
        values["epochs_done"] = epochs_done
    if best:
        values["best_metrics"] = best
    if served:
        values["served_metrics"] = served
    result = session.execute(update(Experiment).where(_ours(experiment_id, attempt)).values(**values))
    if rowcount(result) != 1:
        return False
    webhooks_repo.record_terminal(session, [experiment_id])  # the outbox, in the status's transaction
    return True
