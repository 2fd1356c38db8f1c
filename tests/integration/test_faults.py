"""Nothing accepted is lost: a whole worker killed, Redis restarted empty, the API killed
mid-load, the database briefly unreachable; and a run over its time limit ends `failed`
(a run whose process keeps dying: test_attempts.py).

Each test runs its own stack (tests/conftest.py `start_stack`) on a fresh database and a Redis
server of its own (`redis-server --save "" --appendonly no` on a free port: the shared Redis is
never restarted), with the reconciler every second and a heartbeat stale after 3 s.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from core.db import DatabaseUnavailable, get_engine, in_session, session_factory, upgrade_database
from core.settings import Settings
from core.tables import EpochMetric
from tests.conftest import Stack, free_port, start_stack, store_unsent, wait_for
from tests.integration.faults import FAST_RECOVERY, RedisServer, TcpProxy, data_dir
from tests.integration.test_experiments import tiny_spec
from tests.integration.test_sweeps import base_spec, post_sweep

pytestmark = pytest.mark.integration


def _first_epoch_written_at(stack: Stack, experiment_id: str) -> float:
    with session_factory(get_engine(stack.database_url))() as session:
        first = session.scalar(
            select(func.min(EpochMetric.created_at)).where(EpochMetric.experiment_id == experiment_id)
        )
    assert first is not None
    return (first.replace(tzinfo=UTC) if first.tzinfo is None else first).timestamp()  # SQLite: naive UTC


def _assert_every_epoch_once(stack: Stack, experiment_id: str, epochs: int) -> None:
    assert [e["epoch"] for e in stack.epochs(experiment_id)] == list(range(1, epochs + 1))


# -- a worker killed whole, then a new one ----------------------------------------------------


@pytest.mark.timeout(240)
def test_a_new_worker_resumes_the_run_of_the_only_worker_killed(
    fresh_db: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    with start_stack(fresh_db, own_redis.url, data_dir(tmp_path), workers=1, env_extra=FAST_RECOVERY) as stack:
        exp = stack.submit(tiny_spec("orphaned", epochs=1500))
        running = wait_for(
            lambda: (e := stack.experiment(exp["id"]))["epochs_done"] >= 200 and e, 60, what="200 epochs"
        )
        killed_at = time.time()
        stack.kill_worker(running["worker"])  # its message stays unacknowledged in Redis for hours
        time.sleep(1)
        assert stack.experiment(exp["id"])["status"] == "running"

        stack.start_worker()
        done = stack.wait_terminal(exp["id"], timeout=150)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempt"] == 2
        assert done["worker"] != running["worker"]
        _assert_every_epoch_once(stack, exp["id"], 1500)
        assert _first_epoch_written_at(stack, exp["id"]) < killed_at  # resumed, not started over
        logs = stack.all_worker_logs()
        assert f"{exp['id']} (running)" in logs  # the reconciler found the stale run
        assert "(resumed)" in logs


# -- Redis restarted with nothing persisted ---------------------------------------------------


@pytest.mark.timeout(300)
def test_redis_restarted_empty_loses_no_accepted_experiment(
    fresh_db: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    with start_stack(fresh_db, own_redis.url, data_dir(tmp_path), workers=1, env_extra=FAST_RECOVERY) as stack:
        first = stack.submit(tiny_spec("long", epochs=1200))
        singles = [stack.submit(tiny_spec(f"waiting-{i}", epochs=20))["id"] for i in range(3)]
        sweep = post_sweep(
            stack,
            {"name": "grouped", "base": base_spec(epochs=20), "grid": {"optimizer.lr": [0.005, 0.01]}, "repeats": 2},
        )
        members = sweep["experiment_ids"]
        wait_for(lambda: stack.experiment(first["id"])["status"] == "running", 60, what="the first run")
        client = own_redis.client()
        assert client.llen("cpu") == 4  # three single messages and one group message wait
        client.close()

        own_redis.kill()
        own_redis.start()
        client = own_redis.client()
        assert client.llen("cpu") == 0  # every message is gone (the workers reconnect at once)
        client.close()

        for i in [first["id"], *singles, *members]:
            done = stack.wait_terminal(i, timeout=150)
            assert done["status"] == "succeeded", (i, done["error"])
            _assert_every_epoch_once(stack, i, done["spec"]["epochs"])
        logs = stack.all_worker_logs()
        for i in singles + members:
            assert f"{i} (queued)" in logs  # sent again by the reconciler
        # The sweep's members were sent again as one group, as the API had sent them.
        assert any("group of 4" in line and all(m in line for m in members) for line in logs.splitlines())


# -- the API killed mid-load ------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_api_killed_mid_load_loses_no_accepted_experiment(
    fresh_db: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    with start_stack(fresh_db, own_redis.url, data_dir(tmp_path), workers=1, env_extra=FAST_RECOVERY) as stack:
        accepted: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def submit_until_cut(n: int) -> None:
            with httpx.Client(base_url=stack.base_url, timeout=10) as client:
                for k in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        response = client.post("/experiments", json=tiny_spec(f"load-{n}-{k}", epochs=5))
                    except httpx.TransportError:
                        return  # the API is gone: this request was not accepted
                    if response.status_code == 202:
                        with lock:
                            accepted.append(response.json()["id"])

        threads = [threading.Thread(target=submit_until_cut, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(accepted) >= 20, 60, what="20 accepted experiments")
        stack.kill_api()
        stop.set()
        for t in threads:
            t.join(timeout=30)

        # What an API killed between its commit and its send leaves behind: a queued row with no message.
        orphan = store_unsent(stack.database_url, tiny_spec("committed, never sent", epochs=5))

        stack.start_api()
        stack.wait_ready(1)
        for i in [*accepted, orphan]:
            done = stack.wait_terminal(i, timeout=150)
            assert done["status"] == "succeeded", (i, done["error"])
        assert f"{orphan} (queued)" in stack.all_worker_logs()

        # Nothing committed is left behind either (a request cut after its commit included).
        def settled() -> bool:
            items = stack.client.get("/experiments", params={"limit": 200}).json()["items"]
            return all(e["status"] == "succeeded" for e in items)

        wait_for(settled, 120, interval=0.5, what="every stored experiment to succeed")


# -- the database briefly unreachable ---------------------------------------------------------


def _proxied(database_url: str, proxy: TcpProxy) -> str:
    return database_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/", 1)


@pytest.mark.timeout(240)
def test_worker_rides_out_a_database_outage(postgres_db: str, own_redis: RedisServer, tmp_path: Path) -> None:
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.up()
    worker_env = {"LABTRAIN_DATABASE_URL": _proxied(postgres_db, proxy)}
    with start_stack(postgres_db, own_redis.url, data_dir(tmp_path), workers=1, worker_env=worker_env) as stack:
        exp = stack.submit(tiny_spec("outage", epochs=1500))
        wait_for(lambda: stack.experiment(exp["id"])["epochs_done"] >= 100, 60, what="100 epochs")
        proxy.down()
        time.sleep(4)
        during = stack.experiment(exp["id"])  # the API reaches PostgreSQL directly
        assert during["status"] == "running"
        proxy.up()

        done = stack.wait_terminal(exp["id"], timeout=150)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempt"] == 1  # retried in place: neither failed nor taken over
        assert done["epochs_done"] == 1500
        _assert_every_epoch_once(stack, exp["id"], 1500)
        assert "database unreachable" in stack.all_worker_logs()
    proxy.down()


@pytest.mark.timeout(240)
def test_run_fails_clearly_when_the_database_stays_unreachable(
    postgres_db: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.up()
    worker_env = {"LABTRAIN_DATABASE_URL": _proxied(postgres_db, proxy), "LABTRAIN_DB_RETRY_SECONDS": "2"}
    with start_stack(postgres_db, own_redis.url, data_dir(tmp_path), workers=1, worker_env=worker_env) as stack:
        exp = stack.submit(tiny_spec("long outage", epochs=5000))
        wait_for(lambda: stack.experiment(exp["id"])["epochs_done"] >= 100, 60, what="100 epochs")
        proxy.down()
        wait_for(  # the run gives up after 2 s of retries...
            lambda: f"experiment {exp['id']} failed" in stack.all_worker_logs(), 30, what="the run to give up"
        )
        proxy.up()  # ...and its failure is written as soon as the database answers again

        done = stack.wait_terminal(exp["id"], timeout=60)
        assert done["status"] == "failed"
        assert done["error"].startswith(
            "DatabaseUnavailable: the database was unreachable and 2 s of retries (LABTRAIN_DB_RETRY_SECONDS) "
            "did not reach it: "
        )
        assert 100 <= done["epochs_done"] < 5000
    proxy.down()


def test_only_lost_connections_are_retried(tmp_path: Path) -> None:
    """A logic error is raised at once; a refused connection is retried, then DatabaseUnavailable."""
    calls = 0

    def missing_table(session: Any) -> Any:
        nonlocal calls
        calls += 1
        return session.execute(text("SELECT * FROM no_such_table")).all()

    sqlite = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", db_retry_seconds=5)
    with pytest.raises(Exception, match="no such table"):
        in_session(missing_table, sqlite)
    assert calls == 1

    calls = 0
    refused = Settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x", db_retry_seconds=1)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"1 s of retries .*Connection refused"):
        in_session(missing_table, refused)
    assert calls >= 3
    assert time.monotonic() - started < 2  # no try starts after the budget


def test_a_postgresql_error_that_is_not_a_lost_connection_is_not_retried(postgres_db: str) -> None:
    """A cancelled statement is an OperationalError too, but the connection is fine: no retry."""
    upgrade_database(postgres_db)
    calls = 0

    def too_slow(session: Any) -> Any:
        nonlocal calls
        calls += 1
        session.execute(text("SET LOCAL statement_timeout = 10"))
        return session.execute(text("SELECT pg_sleep(1)")).all()

    with pytest.raises(Exception, match="canceling statement due to statement timeout"):
        in_session(too_slow, Settings(database_url=postgres_db, db_retry_seconds=5))
    assert calls == 1


# -- the per-run time limit -------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_run_over_the_time_limit_fails_with_the_reason(fresh_db: str, own_redis: RedisServer, tmp_path: Path) -> None:
    limit = {"LABTRAIN_MAX_RUN_SECONDS": "5"}
    with start_stack(fresh_db, own_redis.url, data_dir(tmp_path), workers=1, env_extra=limit) as stack:
        exp = stack.submit(tiny_spec("endless", epochs=50_000))
        done = stack.wait_terminal(exp["id"], timeout=60)
        assert done["status"] == "failed"
        assert done["error"] == "the run took longer than the limit of 5 s (LABTRAIN_MAX_RUN_SECONDS)"
        assert done["epochs_done"] < 50_000
        assert len(stack.epochs(exp["id"])) == done["epochs_done"]

        after = stack.submit(tiny_spec("short", epochs=5))  # the worker goes on with the next one
        assert stack.wait_terminal(after["id"], timeout=60)["status"] == "succeeded"
        assert all(process.poll() is None for process in stack.workers.values())
