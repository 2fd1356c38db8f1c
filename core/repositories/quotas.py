"""SQL for the per-owner limits: how much an owner has waiting in the queue."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.tables import Experiment


def queued_count(session: Session, owner: str) -> int:
    """How many of `owner`'s experiments are queued (not yet claimed by a worker)."""
    stmt = select(func.count()).select_from(Experiment).where(Experiment.owner == owner, Experiment.status == "queued")
    return int(session.execute(stmt).scalar_one())


def queue_position(session: Session, experiment: Experiment) -> int:
    """How many experiments (of any owner) are queued on the same queue ahead of `experiment`:
    submitted before it, not yet claimed. Workers take their queue first in, first out."""
    ahead = (Experiment.created_at < experiment.created_at) | (
        (Experiment.created_at == experiment.created_at) & (Experiment.id < experiment.id)
    )
    stmt = (
        select(func.count())
        .select_from(Experiment)
        .where(Experiment.status == "queued", Experiment.queue == experiment.queue, ahead)
    )
    return int(session.execute(stmt).scalar_one())
