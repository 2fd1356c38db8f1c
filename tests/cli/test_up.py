"""`labtrain up` and `labtrain worker` as a user runs them: real processes, a real embedded Redis
(LABTRAIN_REDIS_URL unset), SQLite in a temporary data dir, HTTP on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pydantic import SecretStr

from cli.up import check_exposure, is_loopback, local_url
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 90.0
STOP_SECONDS = 20.0  # an idle worker's warm shutdown takes about 3 s; the grace period is 5 s
TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "dataset": {"name": "spirals", "params": {"n_samples": 200, "noise": 0.1}, "split": {"val": 0.2, "test": 0.2}},
    "model": {"type": "mlp", "hidden_layers": 1, "neurons": 4, "activation": "relu"},
    "loss": "bce",
    "optimizer": {"name": "adam", "lr": 0.01},
    "batch_size": 32,
    "epochs": 2,
    "seed": 0,
}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def labtrain_argv() -> list[str]:
    """The installed console script when there is one (what `make run` uses), else the module."""
    script = Path(sys.executable).with_name("labtrain")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without any LABTRAIN_ variable: SQLite and the embedded Redis, no keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABTRAIN_")}
    env.update(LABTRAIN_DATA_DIR=str(data_dir), LABTRAIN_DEVICE="cpu", PYTHONUNBUFFERED="1", **extra)
    return env


def run_labtrain(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*labtrain_argv(), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # exited, or a zombie not reaped yet
        return ""


def gone(proc: psutil.Process) -> bool:
    """Exited (a zombie that nobody reaped yet counts: it runs nothing and holds nothing)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[psutil.Process]:
        """The supervisor's direct children: the embedded Redis, the API and the workers."""
        return psutil.Process(self.process.pid).children()

    def tree(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def child(self, word: str) -> psutil.Process:
        matches = [p for p in self.children() if word in cmdline(p)]
        assert len(matches) == 1, f"expected one child running {word}, got {matches}"
        return matches[0]


def start_up(data_dir: Path, log: Path) -> Up:
    """`labtrain up` on a free port, with nothing configured but the data dir; waits for /healthz."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*labtrain_argv(), "up", "--port", str(port)],
            cwd=ROOT,
            env=clean_env(data_dir, LABTRAIN_CHECKPOINT_SECONDS="0.5"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so the cleanup can reach it all, whatever a test did
        )
    service = Up(process, f"http://127.0.0.1:{port}", data_dir, log)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"labtrain up exited with {process.returncode}:\n{service.output()[-4000:]}")
        try:
            return httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, STARTUP_SECONDS, "labtrain up to answer /healthz")
    except BaseException:
        stop_up(service)
        raise
    return service


def stop_up(service: Up) -> None:
    """What a test left running: Ctrl-C, then SIGKILL for anything that outlives it."""
    if service.process.poll() is not None:
        return
    leftovers = service.tree()
    service.process.send_signal(signal.SIGINT)
    try:
        service.process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        service.process.kill()
    for proc in leftovers:
        if not gone(proc):
            proc.kill()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    service = start_up(tmp_path / "var", tmp_path / "up.log")
    try:
        yield service
    finally:
        stop_up(service)


def submit(url: str, spec: dict[str, Any]) -> str:
    response = httpx.post(f"{url}/experiments", json=spec, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def read(url: str, experiment_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/experiments/{experiment_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def wait_finished(url: str, experiment_id: str, timeout: float = 90) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body = read(url, experiment_id)
        return body if body["status"] in {"succeeded", "failed", "cancelled", "diverged"} else None

    return wait_for(finished, timeout, f"experiment {experiment_id} to finish")


def train_tiny(url: str) -> dict[str, Any]:
    return wait_finished(url, submit(url, TINY_SPEC))


@pytest.mark.timeout(300)
def test_up_serves_and_ctrl_c_stops_every_process(up: Up) -> None:
    redis = up.child("redis-server")
    up.child("uvicorn")
    up.child("celery")
    # The worker trains through the embedded Redis, on its unix socket under the data dir.
    assert (up.data_dir / "redis.sock").exists()
    assert train_tiny(up.url)["status"] == "succeeded"

    tree = up.tree()
    assert len(tree) >= 4, tree  # redis, the API, a worker and its training process
    assert redis in tree
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=STOP_SECONDS) == 0, up.output()[-3000:]
    wait_for(lambda: all(gone(p) for p in tree), 5, "every child of labtrain up to exit")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{up.url}/healthz", timeout=1)
    assert "stopped" in up.output()


@pytest.mark.timeout(300)
def test_a_killed_worker_is_started_again_and_sigterm_stops_all(up: Up) -> None:
    worker = up.child("celery")
    pool = worker.children()  # its training process, killed with it by the supervisor
    worker.kill()

    def new_worker() -> psutil.Process | None:
        found = [p for p in up.children() if "celery" in cmdline(p) and p.pid != worker.pid]
        return found[0] if found else None

    wait_for(new_worker, 30, "the supervisor to start the worker again")
    wait_for(lambda: all(gone(p) for p in pool), 5, "the dead worker's pool process to be killed")
    assert "worker-1 (pid" in up.output()
    assert "was killed by SIGKILL" in up.output()
    assert train_tiny(up.url)["status"] == "succeeded"

    tree = up.tree()  # SIGTERM (a service manager's stop) ends everything as Ctrl-C does
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(timeout=STOP_SECONDS) == 0, up.output()[-3000:]
    wait_for(lambda: all(gone(p) for p in tree), 5, "every child of labtrain up to exit")


@pytest.mark.timeout(300)
def test_a_second_up_on_the_same_data_dir_is_refused(up: Up) -> None:
    result = run_labtrain(["up", "--port", str(free_port())], clean_env(up.data_dir))
    assert result.returncode == 1
    assert "another `labtrain up`" in result.stderr
    assert httpx.get(f"{up.url}/healthz", timeout=2).status_code == 200  # the first one is untouched


def test_up_beyond_loopback_without_keys_is_refused(tmp_path: Path) -> None:
    result = run_labtrain(["up", "--host", "0.0.0.0", "--port", str(free_port())], clean_env(tmp_path))
    assert result.returncode == 2
    assert "LABTRAIN_API_KEYS" in result.stderr
    assert "--insecure" in result.stderr
    assert not (tmp_path / "labtrain.db").exists()  # refused before touching anything


def test_up_on_a_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_labtrain(["up", "--port", str(busy.getsockname()[1])], clean_env(tmp_path))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr


def test_worker_without_redis_url_is_refused(tmp_path: Path) -> None:
    result = run_labtrain(["worker"], clean_env(tmp_path))
    assert result.returncode == 2
    assert "LABTRAIN_REDIS_URL is not set" in result.stderr


def test_exposure_rules() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"))
    check_exposure("0.0.0.0", Settings(api_keys=SecretStr("lab:secret")), insecure=False)  # keys: allowed
    check_exposure("0.0.0.0", Settings(), insecure=True)  # told so: allowed
    assert local_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert local_url("::", 8000) == "http://[::1]:8000"


@pytest.mark.timeout(300)
def test_ctrl_c_during_training_loses_nothing(tmp_path: Path) -> None:
    """Stopped mid-run, the experiment is put back in the (persisted) embedded queue and the next
    `labtrain up` on the same data dir finishes it from its checkpoint, every epoch once."""
    spec = {**TINY_SPEC, "name": "long", "epochs": 3000}
    spec["dataset"] = {**TINY_SPEC["dataset"], "params": {"n_samples": 1000, "noise": 0.1}}
    first = start_up(tmp_path / "var", tmp_path / "up.log")
    try:
        experiment_id = submit(first.url, spec)
        wait_for(lambda: read(first.url, experiment_id)["epochs_done"] >= 20, 60, "training to be under way")
        first.process.send_signal(signal.SIGINT)
        assert first.process.wait(timeout=STOP_SECONDS) == 0, first.output()[-3000:]
    finally:
        stop_up(first)

    second = start_up(tmp_path / "var", tmp_path / "up.log")
    try:
        body = wait_finished(second.url, experiment_id, timeout=180)
        assert body["status"] == "succeeded", body
        assert body["attempt"] == 2  # the second delivery finished it: the first was stopped mid-run
        epochs = httpx.get(f"{second.url}/experiments/{experiment_id}/metrics", timeout=10).json()["epochs"]
        assert [row["epoch"] for row in epochs] == list(range(1, 3001))
    finally:
        stop_up(second)
