"""The reconciler: sends again the accepted experiments whose message was lost (Redis restarted
empty, the API died between its commit and its send, a whole worker was killed).

It runs as a thread in the main process of every worker (started on `worker_ready`); a Redis
lock (SET NX PX) lets one pass run at a time across all the workers, at most one pass every
LABTRAIN_RECONCILE_SECONDS. A pass reads the database, the truth, then the broker:

- a `queued` experiment older than one interval whose id is neither waiting in a queue list nor
  delivered to a worker within LABTRAIN_HEARTBEAT_STALE_SECONDS (kombu's `unacked` set) is sent again;
- a `running` experiment whose heartbeat is older than LABTRAIN_HEARTBEAT_STALE_SECONDS, and whose
  id is not waiting in a queue, is sent again: its claim takes the stale run over, and the run
  resumes from its last checkpoint.

Members of one sweep found together are planned into groups again (`ml.grouping.plan_groups`)
and sent as group tasks, as the API sent them; a member whose spec cannot be planned here (an
uploaded dataset) is sent alone. Every delivery claims its rows conditionally, so a duplicate
message is harmless; a message already waiting is never doubled, so the queue is not flooded.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from core.broker import QUEUES
from core.db import create_db_engine, session_factory
from core.enqueue import enqueue_group
from core.repositories import experiments as experiments_repo
from core.settings import Settings
from core.tables import utcnow

log = logging.getLogger("labtrain.reconciler")

LOCK_KEY = "labtrain:reconciler"
# The lock outlives a slow pass (it is shortened to the interval after it), but not by much: a worker
# whose host is cut off mid-pass cannot release it, and every other worker waits for it to expire.
PASS_LOCK_INTERVALS = 5
BATCH = 1000  # experiments looked at in one pass (oldest first); the next pass takes the rest


def message_ids(raw: bytes | str) -> set[str]:
    """The experiment ids a queued message names (kombu's Redis format; an `unacked` entry is
    `[message, exchange, routing_key]`); empty for anything else."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):
            message = message[0]
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]  # task protocol 2: [args, kwargs, embed]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return set()
    ids: set[str] = set()
    for arg in args if isinstance(args, list) else ():
        if isinstance(arg, str):
            ids.add(arg)
        elif isinstance(arg, list):
            ids.update(a for a in arg if isinstance(a, str))
    return ids


def _ids(raws: Iterable[bytes | str | None]) -> set[str]:
    return {i for raw in raws if raw for i in message_ids(raw)}


def live_ids(channel: Any, delivered_since: float) -> set[str]:
    """Ids with a message still alive in the broker: waiting in a queue list (every priority),
    or delivered to a worker at or after `delivered_since` (a Unix time) and not acknowledged."""
    client = channel.client
    keys = [q if not pri else f"{q}{channel.sep}{pri}" for q in QUEUES for pri in channel.priority_steps]
    live: set[str] = set()
    for key in dict.fromkeys(keys):
        live |= _ids(client.lrange(key, 0, -1))
    recent = client.zrangebyscore(channel.unacked_index_key, delivered_since, "+inf")
    if recent:
        live |= _ids(client.hmget(channel.unacked_key, recent))
    return live


def plan_batches(rows: list[experiments_repo.Unfinished], settings: Settings) -> list[tuple[str, list[str]]]:
    """(queue, ids) per message: a sweep's members regrouped as the API groups them, others alone."""
    from ml.grouping import plan_groups
    from ml.spec import validate_spec

    batches: list[tuple[str, list[str]]] = []
    by_sweep: dict[tuple[str, str], list[experiments_repo.Unfinished]] = {}
    for row in rows:
        if row.sweep_id is None:
            batches.append((row.queue, [row.id]))
        else:
            by_sweep.setdefault((row.sweep_id, row.queue), []).append(row)
    for (_, queue), members in by_sweep.items():
        try:
            checked = [(m.id, validate_spec(m.spec)) for m in members]
        except Exception as exc:  # an uploaded dataset is known only to the database: send them alone
            log.info("sweep members %s sent one by one (%s)", [m.id for m in members], exc)
            batches.extend((queue, [m.id]) for m in members)
            continue
        groups = plan_groups(checked, max_members=settings.group_max_members, memory_bytes=settings.group_memory_bytes)
        batches.extend((queue, [str(i) for i in group]) for group in groups)
    return batches


def reconcile_once(app: Celery, settings: Settings, sessions: sessionmaker[Session], channel: Any) -> list[list[str]]:
    """One pass (the caller holds the lock; `channel` is a kombu Redis channel of `app`'s broker):
    send again what lost its message; returns the ids of every message sent."""
    now = utcnow()
    with sessions() as session:
        rows = experiments_repo.list_possibly_lost(
            session,
            queued_before=now - timedelta(seconds=settings.reconcile_seconds),
            stale_before=now - timedelta(seconds=settings.heartbeat_stale_seconds),
            limit=BATCH,
        )
    if not rows:
        return []
    sent: list[list[str]] = []
    live = live_ids(channel, time.time() - settings.heartbeat_stale_seconds)
    lost = [row for row in rows if row.id not in live]
    for queue, ids in plan_batches(lost, settings):
        enqueue_group(app, ids, queue)
        sent.append(ids)
    if sent:
        statuses = {row.id: row.status for row in lost}
        log.warning(
            "re-enqueued %d experiment(s) whose message was lost, in %d message(s): %s",
            len(lost),
            len(sent),
            ", ".join(f"{i} ({statuses[i]})" for ids in sent for i in ids),
        )
    return sent


def resend_webhooks(app: Celery, settings: Settings, sessions: sessionmaker[Session], channel: Any) -> list[str]:
    """Send again the webhook deliveries still pending one interval after they were due whose
    message is not in the broker (lost); a duplicate of one on its way finds it done and skips it."""
    from core.repositories import webhooks as webhooks_repo
    from core.webhooks import send_deliveries

    with sessions() as session:
        due_before = utcnow() - timedelta(seconds=settings.reconcile_seconds)
        ids = webhooks_repo.list_due(session, due_before=due_before, limit=BATCH)
    if ids:
        live = live_ids(channel, time.time() - settings.heartbeat_stale_seconds)
        ids = [i for i in ids if i not in live]
    if ids:
        send_deliveries(ids, celery=app)
        log.warning("re-sent %d webhook deliveries whose message was lost: %s", len(ids), ", ".join(ids))
    return ids


class Reconciler(threading.Thread):
    """Every LABTRAIN_RECONCILE_SECONDS: take the lock if no other worker holds it, run a pass."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        super().__init__(name="labtrain-reconciler", daemon=True)
        self.app = app
        self.settings = settings
        self._stopping = threading.Event()
        self._token = secrets.token_hex(8)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        # Its own engine, never shared with the pool children this process forks.
        engine = create_db_engine(self.settings.resolved_database_url)
        sessions = session_factory(engine)
        try:
            while not self._stopping.wait(self.settings.reconcile_seconds):
                try:
                    self._pass(sessions)
                except Exception:  # the broker or the database is down: try again next interval
                    log.exception("reconciler pass failed; next try in %g s", self.settings.reconcile_seconds)
        finally:
            engine.dispose()

    def _pass(self, sessions: sessionmaker[Session]) -> None:
        with self.app.connection_for_write() as connection:
            channel = connection.default_channel
            client = channel.client
            lock_ms = int(PASS_LOCK_INTERVALS * self.settings.reconcile_seconds * 1000)
            if not client.set(LOCK_KEY, self._token, nx=True, px=lock_ms):
                return  # another worker's pass runs, or ran less than an interval ago
            started = time.monotonic()
            try:
                reconcile_once(self.app, self.settings, sessions, channel)
                resend_webhooks(self.app, self.settings, sessions, channel)
            finally:
                # Hold the lock until one interval after this pass began: one pass per interval in all.
                left_ms = int((self.settings.reconcile_seconds - (time.monotonic() - started)) * 1000)
                if client.get(LOCK_KEY) in (self._token, self._token.encode()):
                    if left_ms > 0:
                        client.pexpire(LOCK_KEY, left_ms)
                    else:
                        client.delete(LOCK_KEY)


_running: Reconciler | None = None


def start(app: Celery, settings: Settings) -> None:
    """Start this process's reconciler (once)."""
    global _running
    if _running is None or not _running.is_alive():
        _running = Reconciler(app, settings)
        _running.start()


def stop() -> None:
    global _running
    if _running is not None:
        _running.stop()
        _running = None
