"""Request dependencies: settings, the unit of work (session + enqueue-after-commit), the owner."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio.to_thread
from anyio import CancelScope, CapacityLimiter
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


# The cheap dependencies are async: they run on the event loop, where a sync one would cost a
# threadpool hop each (two thread switches, ~0.1-0.3 ms on a loaded machine; bench/README.md, "Serving").


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery


def finish(uow: UnitOfWork, failed: bool) -> None:
    """Commit (and run the after-commit actions) or roll back, then close: one thread hop."""
    try:
        if failed:
            uow.session.rollback()
        else:
            try:
                uow.commit()
            except BaseException:
                uow.session.rollback()
                raise
    finally:
        uow.session.close()


async def _uow(request: Request) -> AsyncIterator[UnitOfWork]:
    """The request's unit of work. Opening a session does no I/O (it connects at its first
    query, in the handler's thread), so it is opened here on the event loop; the end (commit or
    rollback, close) is one threadpool call, shielded from cancellation, and on a limiter of its
    own: like FastAPI's own teardown of a sync dependency, it must never wait for a free thread
    of the 40 that handlers waiting for this session's connection may hold."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    uow = UnitOfWork(factory())
    failed = True
    try:
        yield uow
        failed = False
    finally:
        with CancelScope(shield=True):
            await anyio.to_thread.run_sync(finish, uow, failed, limiter=CapacityLimiter(1))


async def get_owner(
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
