"""SQL for artifacts: one model and one checkpoint per experiment, replaced on rewrite."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, undefer

from core.tables import Artifact, utcnow


def put(session: Session, experiment_id: str, kind: str, data: bytes, *, epoch: int | None = None) -> None:
    """Store `data` as the experiment's `kind` artifact, replacing the previous one."""
    session.execute(delete(Artifact).where(Artifact.experiment_id == experiment_id, Artifact.kind == kind))
    session.add(
        Artifact(experiment_id=experiment_id, kind=kind, data=data, size=len(data), epoch=epoch, created_at=utcnow())
    )
    session.flush()


def get(session: Session, experiment_id: str, kind: str) -> Artifact | None:
    """The artifact with its data loaded, or None."""
    stmt = (
        select(Artifact)
        .where(Artifact.experiment_id == experiment_id, Artifact.kind == kind)
        .options(undefer(Artifact.data))
    )
    return session.scalars(stmt).one_or_none()


def remove(session: Session, experiment_id: str, kind: str) -> None:
    session.execute(delete(Artifact).where(Artifact.experiment_id == experiment_id, Artifact.kind == kind))
