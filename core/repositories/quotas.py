"""SQL for the per-owner limits: how much an owner has waiting in the queue."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.tables import Experiment


def queued_count(session: Session, owner: str) -> int:
    """How many of `owner`'s experiments are queued (not yet claimed by a worker)."""
    stmt = select(func.count()).select_from(Experiment).where(Experiment.owner == owner, Experiment.status == "queued")
    return int(session.execute(stmt).scalar_one())
