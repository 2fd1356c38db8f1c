"""SQL for sweeps: creation, reads, listing, cancel. Their members are experiments rows with
`sweep_id` set (core/repositories/experiments.py writes and counts them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from core.repositories import webhooks as webhooks_repo
from core.repositories.tags import has_tag
from core.tables import Sweep, utcnow


def create(
    session: Session,
    *,
    owner: str,
    name: str,
    spec: dict[str, Any],
    tags: list[str] | None = None,
    notes: str | None = None,
) -> Sweep:
    """Insert a running sweep (flushed, so its id can be given to its members)."""
    sweep = Sweep(
        owner=owner, name=name, spec=spec, status="running", tags=tags or [], notes=notes, created_at=utcnow()
    )
    session.add(sweep)
    session.flush()
    return sweep


def set_spec(session: Session, sweep: Sweep, spec: dict[str, Any]) -> None:
    """Replace the stored request and member list (a new dict, so the JSON column is rewritten)."""
    sweep.spec = dict(spec)
    session.flush()


def get(session: Session, sweep_id: str, owner: str | None = None) -> Sweep | None:
    """One sweep; with `owner`, only if it belongs to that owner."""
    stmt = select(Sweep).where(Sweep.id == sweep_id)
    if owner is not None:
        stmt = stmt.where(Sweep.owner == owner)
    return session.scalars(stmt).one_or_none()


def list_page(
    session: Session,
    *,
    owner: str,
    limit: int,
    tags: list[str] | None = None,
    before: tuple[datetime, str] | None = None,
) -> list[Sweep]:
    """Newest first, carrying every one of `tags`; `before` is the (created_at, id) of the last
    row of the previous page."""
    stmt = select(Sweep).where(Sweep.owner == owner)
    for tag in tags or []:
        stmt = stmt.where(has_tag(session, Sweep.tags, tag))
    if before is not None:
        created_at, last_id = before
        stmt = stmt.where(or_(Sweep.created_at < created_at, and_(Sweep.created_at == created_at, Sweep.id < last_id)))
    return list(session.scalars(stmt.order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit)))


def mark_cancelled(session: Session, sweep_id: str) -> None:
    session.execute(update(Sweep).where(Sweep.id == sweep_id).values(status="cancelled"))
    webhooks_repo.record_sweep_finished(session, sweep_id)  # when no member is left running
