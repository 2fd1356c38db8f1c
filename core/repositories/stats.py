"""SQL for the service's metrics (GET /metrics): experiments by status, and epoch durations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from core.tables import EpochMetric, Experiment


def experiments_by_status(session: Session) -> dict[str, int]:
    """status → how many experiments have it, every owner (one GROUP BY)."""
    rows = session.execute(select(Experiment.status, func.count()).group_by(Experiment.status))
    return {status: int(count) for status, count in rows}


@dataclass(frozen=True)
class EpochSeconds:
    """A cumulative histogram of stored epoch durations: `buckets[i]` epochs took at most
    `bounds[i]` seconds; `count` and `total` are over every stored epoch."""

    bounds: tuple[float, ...]
    buckets: tuple[int, ...]
    count: int
    total: float


def epoch_seconds(session: Session, bounds: Sequence[float]) -> EpochSeconds:
    """The durations of every stored epoch as histogram buckets, counted by the database in one
    scan (no row comes back to Python)."""
    columns: list[ColumnElement[Any]] = [func.count(), func.coalesce(func.sum(EpochMetric.seconds), 0.0)]
    columns += [func.coalesce(func.sum(case((EpochMetric.seconds <= b, 1), else_=0)), 0) for b in bounds]
    row = session.execute(select(*columns).select_from(EpochMetric)).one()
    return EpochSeconds(
        bounds=tuple(bounds), buckets=tuple(int(v) for v in row[2:]), count=int(row[0]), total=float(row[1])
    )
