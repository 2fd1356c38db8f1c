"""SQL for live progress (Server-Sent Events): small reads of an experiment's or a sweep's state,
and the epochs after the last one a client has seen. Read-only; polled about twice a second."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.tables import EpochMetric, Experiment, Sweep


@dataclass(frozen=True)
class ExperimentState:
    status: str
    epochs_done: int
    error: str | None


@dataclass(frozen=True)
class MemberState:
    experiment_id: str
    name: str
    status: str
    epochs_done: int
    error: str | None
    latest: dict[str, Any] | None


def experiment_state(session: Session, experiment_id: str) -> ExperimentState | None:
    row = session.execute(
        select(Experiment.status, Experiment.epochs_done, Experiment.error).where(Experiment.id == experiment_id)
    ).one_or_none()
    return None if row is None else ExperimentState(row.status, row.epochs_done, row.error)


def epochs_after(session: Session, experiment_id: str, after: int) -> list[EpochMetric]:
    """The stored epochs numbered above `after`, in order."""
    stmt = (
        select(EpochMetric)
        .where(EpochMetric.experiment_id == experiment_id, EpochMetric.epoch > after)
        .order_by(EpochMetric.epoch)
    )
    return list(session.scalars(stmt))


def sweep_status(session: Session, sweep_id: str) -> str | None:
    """The sweep's stored status (`running` or `cancelled`); None when it is gone."""
    return session.scalars(select(Sweep.status).where(Sweep.id == sweep_id)).one_or_none()


def member_states(session: Session, sweep_id: str) -> list[MemberState]:
    stmt = select(
        Experiment.id,
        Experiment.name,
        Experiment.status,
        Experiment.epochs_done,
        Experiment.error,
        Experiment.latest_metrics,
    ).where(Experiment.sweep_id == sweep_id)
    rows = session.execute(stmt)
    return [MemberState(r.id, r.name, r.status, r.epochs_done, r.error, r.latest_metrics) for r in rows]
