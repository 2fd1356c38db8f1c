"""Request dependencies: settings, the unit of work (session + enqueue-after-commit), the owner."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from api.errors import Unauthorized
from core.settings import Settings


class UnitOfWork:
    """One request's session. The request dependency owns it: it commits when the handler
    returns, and only then runs the `after_commit` actions (sending tasks), so a worker never
    sees a message before the row it names."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._after_commit: list[Callable[[], Any]] = []

    def after_commit(self, action: Callable[[], Any]) -> None:
        self._after_commit.append(action)

    def commit(self) -> None:
        self.session.commit()
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            action()


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def _uow(request: Request) -> Iterator[UnitOfWork]:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    session = factory()
    uow = UnitOfWork(session)
    try:
        yield uow
        uow.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_owner(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """The owner of the request: "default" with auth off; else the owner of the API key given as
    `Authorization: Bearer <key>` or `X-API-Key: <key>`."""
    owners: dict[str, str] = request.app.state.key_owners
    if not owners:
        return "default"
    key = x_api_key
    if key is None and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if key:
        for known, owner in owners.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                return owner
    raise Unauthorized("a valid API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")


# How many requests of one API process may hold a database session at once; the others wait for
# a slot in the event loop, holding no thread and no connection. Without a bound, many concurrent
# requests deadlock: a sync handler runs in one of anyio's 40 threadpool threads and keeps its
# session (a pooled connection and, on SQLite, the write lock after an INSERT) until the
# dependency's teardown commits, and before that teardown FastAPI validates the handler's return
# value in *another* threadpool thread. With 40+ requests in flight every thread can be taken by
# handlers waiting for a connection (or SQLite's lock) that sessions hold while they wait for a
# thread; nothing moves until the pool's 30 s timeout turns them into 500s. With at most
# DB_SESSIONS (< 40) sessions open, at most DB_SESSIONS threads can be blocked on the database,
# so a thread is always free for a session to finish; and the API's pool holds more connections
# than DB_SESSIONS (api/app.py), so the short sessions outside this dependency (the SSE polls,
# /readyz, /metrics) always find one and give it back without waiting on anything.
DB_SESSIONS = 16

# scope="function": the commit (and the enqueue after it) happens before the response is sent.
# One Depends object for every route, so they share the one limit.
UowDep = Annotated[UnitOfWork, Depends(_uow, scope="function", max_concurrency=DB_SESSIONS)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
OwnerDep = Annotated[str, Depends(get_owner)]
