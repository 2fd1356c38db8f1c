"""Readiness: the database answers, Redis answers, and at least one worker answers a ping."""

from __future__ import annotations

from celery import Celery
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from core.repositories import health as health_repo

PING_TIMEOUT_SECONDS = 1.0


def redis_client_url(broker_url: str) -> str:
    """redis-py spells kombu's `redis+socket:///path` as `unix:///path`."""
    if broker_url.startswith("redis+socket://"):
        return "unix://" + broker_url.removeprefix("redis+socket://")
    return broker_url


def check_database(factory: sessionmaker[Session]) -> str:
    with factory() as session:
        health_repo.ping(session)
    return "ok"


def check_redis(broker_url: str) -> str:
    client = Redis.from_url(
        redis_client_url(broker_url), socket_timeout=PING_TIMEOUT_SECONDS, socket_connect_timeout=PING_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def check_workers(celery: Celery) -> str:
    replies = celery.control.ping(timeout=PING_TIMEOUT_SECONDS)
    if not replies:
        raise RuntimeError(f"no worker answered a ping within {PING_TIMEOUT_SECONDS:g} s")
    names = sorted(name for reply in replies for name in reply)
    return f"{len(names)} answering: {', '.join(names)}"


def readiness(factory: sessionmaker[Session], celery: Celery, broker_url: str) -> tuple[bool, dict[str, str]]:
    """(ready, check → "ok"/description or "failed: why"). Workers are only asked when Redis answers."""
    checks: dict[str, str] = {}
    ok = True
    for name, check in (
        ("database", lambda: check_database(factory)),
        ("redis", lambda: check_redis(broker_url)),
        ("workers", lambda: check_workers(celery)),
    ):
        if name == "workers" and not checks["redis"].startswith("ok"):
            checks[name] = "failed: not checked, Redis does not answer"
            ok = False
            continue
        try:
            checks[name] = check()
        except Exception as exc:
            checks[name] = f"failed: {type(exc).__name__}: {exc}"
            ok = False
    return ok, checks
