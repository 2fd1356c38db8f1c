"""SQL for webhooks: the outbox of events (`webhook_deliveries`), every try of one
(`webhook_attempts`), and the owners' signing secrets (`webhook_secrets`).

An event is inserted by the transaction that makes it true (`record_terminal`, called where a
terminal status is written), so it commits or rolls back with that status: nothing is sent for
a status that was not stored, and nothing stored is lost. The ids inserted are kept in
`session.info` and sent to the workers (`labtrain.deliver_webhook`) only once the session has
committed (the listener at the end); a message lost on the way is sent again by the reconciler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.repositories import rowcount
from core.tables import (
    TERMINAL_STATUSES,
    Experiment,
    Sweep,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSecret,
    new_id,
    utcnow,
)

log = logging.getLogger("labtrain.webhooks")

PENDING_KEY = "labtrain_webhook_deliveries"  # session.info: ids inserted, to send after the commit


def _iso(moment: datetime | None) -> str:
    """ISO 8601 in UTC with its offset (SQLite gives the stored time back without one)."""
    moment = moment or utcnow()
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _insert_ignored(session: Session, model: type[Any], values: dict[str, Any]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING (SQLite and PostgreSQL spell it alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model).values(**values).on_conflict_do_nothing()
    return sqlite.insert(model).values(**values).on_conflict_do_nothing()


def _insert_new(session: Session, values: dict[str, Any]) -> bool:
    """Insert one delivery unless its (experiment or sweep, event) exists: a concurrent
    transaction that inserted it first wins and this one goes on (no IntegrityError to abort
    the terminal status). True when this one inserted it; its id is then sent after the commit."""
    stmt = _insert_ignored(session, WebhookDelivery, values).returning(WebhookDelivery.id)
    inserted = session.execute(stmt).scalar_one_or_none()
    if inserted is None:
        return False
    session.info.setdefault(PENDING_KEY, []).append(inserted)
    return True


def _delivery(owner: str, url: str, event_name: str, payload: dict[str, Any], **target: str) -> dict[str, Any]:
    now = utcnow()
    delivery_id = new_id()
    return {
        "id": delivery_id,
        "owner": owner,
        "event": event_name,
        "url": url,
        "payload": {"id": delivery_id, "event": event_name, **payload},
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        **target,
    }


def record_terminal(session: Session, experiment_ids: list[str], *, sweeps: bool = True) -> None:
    """In the transaction that wrote their terminal status: an event for each of these
    experiments whose spec asks for it (`notify.events`), and with `sweeps`, the `finished`
    event of each sweep whose last member this transaction ended."""
    if not experiment_ids:
        return
    rows = session.execute(
        select(
            Experiment.id,
            Experiment.owner,
            Experiment.status,
            Experiment.spec,
            Experiment.served_metrics,
            Experiment.sweep_id,
            Experiment.finished_at,
        ).where(Experiment.id.in_(experiment_ids), Experiment.status.in_(TERMINAL_STATUSES))
    ).all()
    sweep_ids: set[str] = set()
    for experiment_id, owner, status, spec, served, sweep_id, finished_at in rows:
        if sweep_id is not None:
            sweep_ids.add(sweep_id)
        notify = (spec or {}).get("notify")
        if not notify or status not in notify.get("events", ()):
            continue
        payload = {"experiment_id": experiment_id, "status": status, "metrics": served, "timestamp": _iso(finished_at)}
        _insert_new(session, _delivery(owner, notify["url"], status, payload, experiment_id=experiment_id))
    if sweeps:
        for sweep_id in sorted(sweep_ids):
            record_sweep_finished(session, sweep_id)


def record_sweep_finished(session: Session, sweep_id: str) -> None:
    """The sweep's `finished` event, if it asks for one and no member is queued or running.

    The sweep row is locked before its members are counted: two members ending at once in two
    transactions would otherwise each see the other still running (each count runs before the
    other commits) and neither would send the event. Under the lock the second one counts after
    the first committed. Every writer takes member rows first and the sweep row last."""
    spec = session.execute(select(Sweep.spec).where(Sweep.id == sweep_id)).scalar_one_or_none()
    notify = ((spec or {}).get("request") or {}).get("notify")
    if not notify or "finished" not in notify.get("events", ()):
        return
    locked = session.execute(
        select(Sweep.owner, Sweep.status).where(Sweep.id == sweep_id).with_for_update()
    ).one_or_none()
    if locked is None:
        return
    owner, sweep_status = locked
    counts = {
        status: int(n)
        for status, n in session.execute(
            select(Experiment.status, func.count()).where(Experiment.sweep_id == sweep_id).group_by(Experiment.status)
        )
    }
    if not counts or counts.get("queued", 0) + counts.get("running", 0):
        return
    payload = {
        "sweep_id": sweep_id,
        "status": "cancelled" if sweep_status == "cancelled" else "finished",
        "counts": counts,
        "timestamp": _iso(None),
    }
    _insert_new(session, _delivery(owner, notify["url"], "finished", payload, sweep_id=sweep_id))


# -- sending (core/webhooks.py) ---------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A delivery a sender holds until its lease ends: what one try needs."""

    id: str
    owner: str
    url: str
    payload: dict[str, Any]
    attempts: int


def claim(session: Session, delivery_id: str, *, lease_seconds: float, early_seconds: float = 5.0) -> Claimed | None:
    """Hold a pending delivery that is due (within `early_seconds`: another host's clock) and
    held by no other sender; None for a delivered, failed, held or unknown one, so a duplicate
    message does nothing."""
    now = utcnow()
    row = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now + timedelta(seconds=early_seconds),
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
        )
        .values(locked_until=now + timedelta(seconds=lease_seconds))
        .returning(
            WebhookDelivery.id,
            WebhookDelivery.owner,
            WebhookDelivery.url,
            WebhookDelivery.payload,
            WebhookDelivery.attempts,
        )
    ).one_or_none()
    return Claimed(*row) if row is not None else None


def record_attempt(
    session: Session,
    delivery_id: str,
    *,
    number: int,
    status_code: int | None,
    error: str | None,
    duration_seconds: float,
    outcome: str,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Try `number` of a delivery and what it leaves (`outcome`: pending, delivered or failed),
    fenced on the tries counted so far: a try recorded already is not recorded again."""
    now = utcnow()
    values: dict[str, Any] = {"attempts": number, "status": outcome, "locked_until": None}
    if outcome == "pending":
        values["next_attempt_at"] = next_attempt_at or now
    else:
        values["finished_at"] = now
    result = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == "pending",
            WebhookDelivery.attempts == number - 1,
        )
        .values(**values)
    )
    if rowcount(result) != 1:
        return False
    session.add(
        WebhookAttempt(
            delivery_id=delivery_id,
            number=number,
            status_code=status_code,
            error=error,
            duration_seconds=duration_seconds,
            created_at=now,
        )
    )
    session.flush()
    return True


def list_due(session: Session, *, due_before: datetime, limit: int) -> list[str]:
    """Pending deliveries due before `due_before` and held by no sender (their message may be
    lost), oldest first: the reconciler sends them again."""
    now = utcnow()
    stmt = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at < due_before,
            or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now),
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


# -- reads (GET /experiments/{id}/deliveries, /sweeps/{id}/deliveries) ------------------------


def list_deliveries(
    session: Session, *, experiment_id: str | None = None, sweep_id: str | None = None
) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    """The deliveries of one experiment or sweep, oldest first, each with its tries in order."""
    stmt = select(WebhookDelivery)
    if experiment_id is not None:
        stmt = stmt.where(WebhookDelivery.experiment_id == experiment_id)
    if sweep_id is not None:
        stmt = stmt.where(WebhookDelivery.sweep_id == sweep_id)
    deliveries = list(session.scalars(stmt.order_by(WebhookDelivery.created_at, WebhookDelivery.id)))
    attempts: dict[str, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return [(d, attempts[d.id]) for d in deliveries]


# -- the owners' secrets ----------------------------------------------------------------------


def owner_secret(session: Session, owner: str, make: Callable[[], str]) -> str:
    """The owner's stored secret, made with `make` and stored on first use (a concurrent first
    use by another process keeps its own: both read the one stored)."""
    found = session.execute(select(WebhookSecret.secret).where(WebhookSecret.owner == owner)).scalar_one_or_none()
    if found is not None:
        return found
    session.execute(_insert_ignored(session, WebhookSecret, {"owner": owner, "secret": make(), "created_at": utcnow()}))
    return str(session.execute(select(WebhookSecret.secret).where(WebhookSecret.owner == owner)).scalar_one())


# -- send after the commit --------------------------------------------------------------------


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    """The deliveries this session inserted are committed: send them to the workers. Here, once
    for every writer of a terminal status (API requests, single and group runs), rather than
    after each of their commits; imported late so the repositories never import Celery."""
    ids = session.info.pop(PENDING_KEY, None)
    if ids:
        from core.webhooks import send_deliveries

        send_deliveries(list(ids))


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)  # rolled back with the status that made them
