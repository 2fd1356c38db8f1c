"""SQL for the per-epoch metrics of experiments."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.orm import Session

from core.repositories import rowcount
from core.tables import EpochMetric, utcnow


def relax_durability(session: Session) -> None:
    """Let this transaction commit without waiting for the disk (PostgreSQL): a crash can lose the
    last epochs' rows, which a resumed run writes again from its checkpoint anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def add_epoch(
    session: Session,
    experiment_id: str,
    *,
    epoch: int,
    train_loss: float | None,
    val_loss: float | None,
    metrics: dict[str, Any],
    seconds: float,
) -> None:
    session.add(
        EpochMetric(
            experiment_id=experiment_id,
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            metrics=metrics,
            seconds=seconds,
            created_at=utcnow(),
        )
    )
    session.flush()


def add_epochs(session: Session, rows: list[dict[str, Any]]) -> None:
    """Many epochs' rows (of one or several experiments) in one INSERT; each row has the keys of
    `add_epoch` plus `experiment_id`."""
    if rows:
        now = utcnow()
        session.execute(insert(EpochMetric), [{"created_at": now, **row} for row in rows])


def delete_after(session: Session, experiment_id: str, epoch: int) -> int:
    """Drop the epochs after `epoch` (a resumed run trains them again); returns how many."""
    result = session.execute(
        delete(EpochMetric).where(EpochMetric.experiment_id == experiment_id, EpochMetric.epoch > epoch)
    )
    return rowcount(result)


def list_epochs(session: Session, experiment_id: str) -> list[EpochMetric]:
    stmt = select(EpochMetric).where(EpochMetric.experiment_id == experiment_id).order_by(EpochMetric.epoch)
    return list(session.scalars(stmt))
