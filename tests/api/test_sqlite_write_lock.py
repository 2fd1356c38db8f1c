"""SQLite write transactions of one process queue on the engine's lock (core/db.py): a writer
waits for the previous commit, rollback or close, then enters; nothing is left locked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from core.db import create_db_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'w.db'}", pool_size=4, max_overflow=4)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (i INTEGER)"))
    yield engine
    engine.dispose()


def _insert_in_thread(engine: Engine, value: int, done: threading.Event) -> threading.Thread:
    def work() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:i)"), {"i": value})
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_a_writer_waits_for_the_open_write_transaction_to_end(engine: Engine, end: str) -> None:
    conn = engine.connect()
    conn.execute(text("INSERT INTO t VALUES (1)"))  # holds the write lock until it ends
    done = threading.Event()
    thread = _insert_in_thread(engine, 2, done)
    assert not done.wait(0.3), "the second writer entered while the first transaction was open"
    if end == "commit":
        conn.commit()
    elif end == "rollback":
        conn.rollback()
    conn.close()
    assert done.wait(10), f"the second writer was not let in after the first's {end}"
    thread.join()
    with engine.connect() as check:
        values = sorted(check.execute(text("SELECT i FROM t")).scalars())
    assert values == ([1, 2] if end == "commit" else [2])


def test_readers_do_not_wait_for_a_writer(engine: Engine) -> None:
    writer = engine.connect()
    writer.execute(text("INSERT INTO t VALUES (1)"))
    result: list[int] = []
    reader = threading.Thread(target=lambda: result.append(_count(engine)))
    reader.start()
    reader.join(5)
    assert result == [0]  # WAL: the reader sees the last commit, without waiting
    writer.rollback()
    writer.close()


def test_an_autocommit_write_releases_at_once(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        done = threading.Event()
        thread = _insert_in_thread(engine, 2, done)  # while `conn` is still checked out
        assert done.wait(10), "an autocommit statement kept the write lock"
        thread.join()
    assert _count(engine) == 2


def test_a_failed_write_releases_after_its_rollback(engine: Engine) -> None:
    def fail() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            conn.execute(text("INSERT INTO missing VALUES (1)"))

    with pytest.raises(Exception, match="no such table"):
        fail()
    done = threading.Event()
    _insert_in_thread(engine, 2, done).join(10)
    assert done.is_set()
    assert _count(engine) == 1


def test_many_concurrent_writers_all_commit(engine: Engine) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO t VALUES (1)"))
                    conn.execute(text("SELECT count(*) FROM t")).scalar()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert _count(engine) == 400


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())
