"""A real labtrain stack for the benchmarks: migrations applied to a database (a temporary SQLite
file unless a URL is given), a Redis database number of its own, the API under uvicorn and N
Celery workers, each in its own process group (so a SIGKILL takes the worker and its pool child,
as a crash would).

    with start_stack(workers=2, env={"LABTRAIN_GROUP_MAX_MEMBERS": "1"}) as stack:
        stack.client.post("/experiments", json=spec)
        stack.kill_worker(name)      # SIGKILL its process group
        stack.start_worker()         # a fresh one

The Redis database is reserved like the test sessions reserve theirs (SET NX on the same key, in
databases 1-15), so a benchmark never empties a database a test run is using.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.db import upgrade_database  # noqa: E402
from worker.run import worker_argv  # noqa: E402

REDIS_LOCK_KEY = "labtrain:test-session"  # the key tests/conftest.py reserves a database with
TERMINAL = {"succeeded", "failed", "cancelled", "diverged"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reserve_redis(base_url: str = "redis://127.0.0.1:6379") -> tuple[str, redis.Redis, str]:
    """A Redis database (1-15) no test session or other benchmark holds: (url, client, token)."""
    token = secrets.token_hex(8)
    for db in random.sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{base_url}/{db}")
        if client.set(REDIS_LOCK_KEY, token, nx=True, ex=3600):
            client.flushdb()
            client.set(REDIS_LOCK_KEY, token, ex=3600)
            return f"{base_url}/{db}", client, token
        client.close()
    raise SystemExit("every Redis database 1-15 is reserved by a test session or a benchmark")


@dataclass
class BenchStack:
    """The running processes and how to reach them."""

    tmp: Path
    database_url: str
    redis_url: str
    env: dict[str, str]
    base_url: str = ""
    api: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # hostname → process
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)  # more APIs
    client: httpx.Client = field(init=False)

    def _spawn(self, argv: list[str], log: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.tmp / log).open("ab") as out:
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

    def start_api(self, log: str, **env: str) -> str:
        """One more API process (stopped with the stack), answering; `env` adds LABTRAIN_ settings."""
        process, url = self._api(log, 1, env)
        self.extra.append(process)
        return url

    def _api(self, log: str, uvicorn_workers: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", "--no-access-log",
                "--workers", str(uvicorn_workers)]  # fmt: skip
        process = self._spawn(argv, log, self.env | env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the API did not start; log in {self.tmp / log}")
            time.sleep(0.1)

    def start_worker(self, queues: tuple[str, ...] = ("cpu",), **env: str) -> str:
        """One more Celery worker (one training process); returns its hostname."""
        name = f"bench-{secrets.token_hex(3)}@labtrain"
        self.workers[name] = self._spawn(worker_argv(list(queues), 1, name), f"worker-{name.split('@')[0]}.log",
                                         self.env | env)  # fmt: skip
        return name

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group (the Celery main process and its pool child)."""
        process = self.workers.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def stop_worker(self, name: str) -> None:
        _stop(self.workers.pop(name))

    def answering_workers(self) -> int:
        checks = self.client.get("/readyz").json().get("checks", {})
        text = str(checks.get("workers", ""))
        return int(text.split()[0]) if text[:1].isdigit() else 0

    def wait_ready(self, workers: int, timeout: float = 120) -> None:
        """Until the API answers /readyz with at least `workers` workers answering its ping."""
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self.workers.items():
                if process.poll() is not None:
                    raise SystemExit(f"worker {name} exited with {process.returncode}; logs in {self.tmp}")
            try:
                if self.answering_workers() >= workers:
                    return
            except (httpx.TransportError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{workers} worker(s) did not get ready; logs in {self.tmp}")
            time.sleep(0.25)

    def wait_terminal(self, ids: list[str], timeout: float, interval: float = 0.05) -> dict[str, dict[str, Any]]:
        """Poll until every experiment is terminal; returns them by id (raises after `timeout`)."""
        pending, done = set(ids), {}
        deadline = time.monotonic() + timeout
        while pending:
            for exp_id in list(pending):
                exp = self.client.get(f"/experiments/{exp_id}").json()
                if exp["status"] in TERMINAL:
                    done[exp_id] = exp
                    pending.discard(exp_id)
                else:
                    break  # the first still running: poll it again later, not the others
            if pending:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{len(pending)} not terminal after {timeout:.0f} s; logs in {self.tmp}")
                time.sleep(interval)
        return done

    def close(self) -> None:
        self.client.close()
        for process in [*self.workers.values(), *self.extra, *([self.api] if self.api else [])]:
            _stop(process)
        self.workers.clear()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (a worker's pool child too), SIGKILL what lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@contextmanager
def start_stack(
    *,
    database_url: str | None = None,
    redis_base_url: str = "redis://127.0.0.1:6379",
    workers: int = 1,
    uvicorn_workers: int = 1,
    env: dict[str, str] | None = None,
    log_level: str = "WARNING",
) -> Iterator[BenchStack]:
    """Start the database, Redis database, API and `workers` workers; stop them all at the end.
    `env` adds LABTRAIN_ settings for every process (e.g. LABTRAIN_GROUP_MAX_MEMBERS)."""
    tmp = Path(tempfile.mkdtemp(prefix="labtrain-bench-"))
    database_url = database_url or f"sqlite:///{tmp / 'labtrain.db'}"
    redis_url, redis_client, token = reserve_redis(redis_base_url)
    upgrade_database(database_url)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LABTRAIN_")}
    base_env.update(LABTRAIN_DATABASE_URL=database_url, LABTRAIN_REDIS_URL=redis_url, LABTRAIN_DATA_DIR=str(tmp),
                    LABTRAIN_DEVICE="cpu", LABTRAIN_LOG_LEVEL=log_level, PYTHONUNBUFFERED="1")  # fmt: skip
    base_env.update(env or {})
    stack = BenchStack(tmp, database_url, redis_url, base_env)
    try:
        for _ in range(workers):
            stack.start_worker()
        stack.api, stack.base_url = stack._api("api.log", uvicorn_workers, {})
        stack.client = httpx.Client(base_url=stack.base_url, timeout=60)
        if workers:
            stack.wait_ready(workers)
        yield stack
    finally:
        if hasattr(stack, "client"):
            stack.close()
        else:
            for process in stack.workers.values():
                _stop(process)
        if redis_client.get(REDIS_LOCK_KEY) == token.encode():
            redis_client.flushdb()  # our queues and pings; the lock key goes with them
        redis_client.close()
