"""The database engine, sessions, and migrations applied from code.

SQLite (the default, a file in data_dir) runs in WAL mode with a long busy timeout so the API
and several worker processes can write at once without "database is locked"; PostgreSQL is
reached through `postgresql+psycopg://`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

ROOT = Path(__file__).resolve().parent.parent
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_SECONDS = 10  # a host that drops packets fails a connect instead of hanging it
# SQLSTATEs of a lost or refused connection: class 08, and the server shutting down or starting.
CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03")

log = logging.getLogger("labtrain.db")
T = TypeVar("T")

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever the URL's driver spelling (`postgres://`, `postgresql://`)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; a power loss may drop the last commit only
    cursor.close()


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


def _locking_connection(lock: threading.Lock) -> type[sqlite3.Connection]:
    """A sqlite3 connection class whose write transactions take `lock` (one per engine, so per
    database file and process) from their first write statement until commit, rollback or close.

    SQLite lets one writer in at a time; a connection that finds the file locked waits in its
    busy handler, which sleeps 1, 2, 5, ... up to 100 ms between tries, however soon the lock is
    freed. With several request threads writing at once (8 concurrent `POST /experiments`) those
    sleeps made p99 latencies of 0.6-1.4 s for transactions of ~1 ms. Threads of one process now
    queue on this lock instead and each enters as soon as the previous commit ends; other
    processes (the workers) still meet SQLite's busy timeout. A thread waits at most as long as
    that timeout, then goes on to SQLite's own waiting."""

    class LockingCursor(sqlite3.Cursor):
        def execute(self, sql: str, parameters: Any = (), /) -> LockingCursor:
            owner = self.connection
            if isinstance(owner, LockingConnection):
                owner.before(sql)
                super().execute(sql, parameters)
                owner.after()
                return self
            super().execute(sql, parameters)
            return self

        def executemany(self, sql: str, parameters: Any, /) -> LockingCursor:
            owner = self.connection
            if isinstance(owner, LockingConnection):
                owner.before(sql)
                super().executemany(sql, parameters)
                owner.after()
                return self
            super().executemany(sql, parameters)
            return self

    class LockingConnection(sqlite3.Connection):
        holding = False

        def before(self, sql: str) -> None:
            if not self.holding and sql.lstrip()[:6].upper() in _WRITES:
                self.holding = lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)

        def after(self) -> None:
            if self.holding and not self.in_transaction:  # autocommit: the statement committed itself
                self.release()

        def release(self) -> None:
            if self.holding:
                self.holding = False
                lock.release()

        def cursor(self, factory: Any = LockingCursor) -> Any:
            return super().cursor(factory)

        def commit(self) -> None:
            try:
                super().commit()
            finally:
                self.release()

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.release()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.release()

    return LockingConnection


def create_db_engine(url: str, *, pool_size: int | None = None, max_overflow: int | None = None) -> Engine:
    """A new engine for `url`; SQLite gets its pragmas on every connection and its folder created.

    `pool_size` / `max_overflow` size the connection pool (default: 10 / 20 for PostgreSQL,
    SQLAlchemy's 5 / 10 for an SQLite file); the API sizes its pool to its request limit."""
    url = normalize_url(url)
    parsed = make_url(url)
    pool = {k: v for k, v in (("pool_size", pool_size), ("max_overflow", max_overflow)) if v is not None}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            pool = {}  # an in-memory database has one connection per thread, not a queue pool
        connect_args = {
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            "check_same_thread": False,
            "factory": _locking_connection(threading.Lock()),
        }
        engine = create_engine(url, connect_args=connect_args, **pool)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        **({"pool_size": 10, "max_overflow": 20} | pool),
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS},
    )


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for `url` (default: the settings' database), created on first use.

    Engines are per process: a forked worker child creates its own on first use."""
    url = normalize_url(url or get_settings().resolved_database_url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_db_engine(url)
        return engine


def dispose_engines() -> None:
    """Forget the engines inherited from a parent process (call in a freshly forked child)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A unit of work for the worker: commits when the block ends, rolls back on an exception."""
    engine = get_engine((settings or get_settings()).resolved_database_url)
    session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException as exc:
        if isinstance(exc, SQLAlchemyError) and not is_connection_error(exc):
            session.rollback()
        else:  # a lost connection, or an exception raised inside the driver (a time limit's signal)
            session.invalidate()  # that connection is never used again
        raise
    finally:
        session.close()


def reset_connections(settings: Settings | None = None) -> None:
    """Close this process's pooled connections; the next session opens a fresh one. For after a
    lost connection, or an exception raised inside the driver (a time limit's signal) that may
    have left a connection mid-query (psycopg: "another command is already in progress")."""
    get_engine((settings or get_settings()).resolved_database_url).dispose()


class DatabaseUnavailable(RuntimeError):
    """The database stayed unreachable for longer than LABTRAIN_DB_RETRY_SECONDS."""


def is_connection_error(exc: BaseException) -> bool:
    """True for a lost or refused database connection (worth retrying), False for everything
    else: a constraint, a syntax error, a missing table, SQLite's own errors (a local file)."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if not hasattr(orig, "sqlstate"):  # not a PostgreSQL (psycopg) error
        return False
    sqlstate = getattr(orig, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(CONNECTION_SQLSTATES)  # None: no answer from a server


# Raised into the driver by a signal handler, wherever the process is: a run's time limit (Celery's
# soft limit, from billiard), Ctrl-C, exit.
INTERRUPTIONS = (SoftTimeLimitExceeded, KeyboardInterrupt, SystemExit)


def interrupted(exc: BaseException) -> bool:
    """True when `exc` was raised while an interruption was being handled (SQLAlchemy cleaning up
    a connection the signal left mid-query: psycopg's "another command is already in progress"):
    the connection error is the interruption's consequence, not an outage, and retrying would
    only delay it, and wait on locks the interrupted connection may still hold."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, INTERRUPTIONS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _worth_retrying(exc: BaseException) -> bool:
    return is_connection_error(exc) and not interrupted(exc)


def in_session(work: Callable[[Session], T], settings: Settings | None = None) -> T:
    """Run `work(session)` as one unit of work (`session_scope`), again from the start with
    exponential backoff while the database connection is lost or refused; no try starts later
    than LABTRAIN_DB_RETRY_SECONDS after the first, then DatabaseUnavailable. Other errors are
    raised at once.

    `work` may run more than once, and a commit whose answer was lost may have happened: it
    must be idempotent (re-read the row, write conditionally)."""
    settings = settings or get_settings()

    def before_sleep(state: RetryCallState) -> None:
        log.warning(
            "database unreachable (try %d), retrying: %s",
            state.attempt_number,
            str(state.outcome.exception() if state.outcome else "").splitlines()[0],
        )
        reset_connections(settings)  # a pooled connection may be dead: it would fail every try

    retrying = Retrying(
        retry=retry_if_exception(_worth_retrying),
        stop=stop_before_delay(settings.db_retry_seconds),  # no try starts after the budget
        wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
        before_sleep=before_sleep,
    )
    try:
        for attempt in retrying:
            with attempt, session_scope(settings) as session:
                return work(session)
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        first_line = str(cause).splitlines()[0] if cause else ""
        raise DatabaseUnavailable(
            f"the database was unreachable and {settings.db_retry_seconds:g} s of retries "
            f"(LABTRAIN_DB_RETRY_SECONDS) did not reach it: {first_line}"
        ) from cause
    raise AssertionError("unreachable: Retrying either returns, raises or gives up")


def alembic_config(url: str | None = None) -> AlembicConfig:
    """The Alembic configuration for `url`, with the migrations of this checkout."""
    from alembic.config import Config

    ini = ROOT / "alembic.ini"
    config = Config(str(ini)) if ini.exists() else Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = normalize_url(url or get_settings().resolved_database_url)
    return config


def upgrade_database(url: str | None = None) -> None:
    """Apply every migration (`alembic upgrade head`) to `url` (default: the settings' database)."""
    from alembic import command

    config = alembic_config(url)
    url = config.attributes["url"]
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(config, "head")
