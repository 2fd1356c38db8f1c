"""The database engine, sessions, and migrations applied from code.

SQLite (the default, a file in data_dir) runs in WAL mode with a long busy timeout so the API
and several worker processes can write at once without "database is locked"; PostgreSQL is
reached through `postgresql+psycopg://`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

ROOT = Path(__file__).resolve().parent.parent
SQLITE_BUSY_TIMEOUT_MS = 30_000

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


def create_db_engine(url: str) -> Engine:
    """A new engine for `url`; SQLite gets its pragmas on every connection and its folder created."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


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
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


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
