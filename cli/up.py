"""`labtrain up`: the whole service from one command, supervised.

It applies the migrations, starts an embedded Redis when LABTRAIN_REDIS_URL is unset, then the
API (uvicorn) and N Celery workers as child processes. Each child runs in a session (process
group) of its own, so a Ctrl-C in the terminal reaches the supervisor alone and the supervisor
decides the order of the shutdown:

- a child that dies unexpectedly is started again after a backoff (1 s, doubling up to 30 s,
  back to 1 s once it has run 30 s), and what is left of its process group is killed first;
- Ctrl-C, SIGTERM or SIGHUP stops the API and the workers first: SIGTERM to each (Celery's warm
  shutdown: a task about to end may end); a worker still busy after the grace period (5 s) gets
  SIGQUIT, Celery's cold shutdown, which puts its unacknowledged message back in the queue, so
  the experiment resumes from its last checkpoint when a worker is back; then everything left
  in every group gets SIGKILL. The embedded Redis stops last, so that message is still written
  to its append-only file. A second Ctrl-C skips the waiting;
- every child asks the kernel for SIGTERM when the supervisor dies (PR_SET_PDEATHSIG), so even
  a `kill -9` of `labtrain up` leaves no process behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import httpx
from rich.console import Console

from cli.embedded_redis import EmbeddedRedis, socket_path
from core.settings import Settings

console = Console(stderr=True, highlight=False, soft_wrap=True)

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
HEALTHY_RUN = 30.0  # a child that ran this long starts its backoff over
POLL = 0.2
STARTUP_TIMEOUT = 120.0  # for Redis to answer and the API to pass /healthz
LATER_STEPS_SECONDS = 3.0  # between the escalations that follow the grace period

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


class UpError(Exception):
    """A refusal or a failed start: one message for the user and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _child_setup(supervisor_pid: int) -> None:
    """Runs in the child between fork and exec: die with the supervisor, whatever kills it."""
    if _libc is not None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor_pid:  # the supervisor died before prctl took effect
        os._exit(1)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Child:
    name: str
    argv: list[str]
    # Signals sent in turn when stopping: the first, then the next after the grace period...
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None  # set while it waits to be started again
    restarts: int = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    def __init__(self, env: dict[str, str], grace: float) -> None:
        self.env = env
        self.grace = grace
        self.children: list[Child] = []
        self.stop_reason: str | None = None
        self.force = False

    # -- signals -----------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_reason is None:
            self.stop_reason = signal.Signals(signum).name
            console.print(f"[bold]labtrain up[/]: {self.stop_reason}, stopping everything (Ctrl-C again: at once)")
        elif signum == signal.SIGINT:
            self.force = True

    # -- children ----------------------------------------------------------------------------
    def spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            child.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: Ctrl-C reaches the supervisor only
            preexec_fn=partial(_child_setup, os.getpid()),  # safe: the supervisor runs no threads
        )
        child.started_at = time.monotonic()
        child.restart_at = None

    def add(self, child: Child) -> Child:
        self.children.append(child)
        self.spawn(child)
        return child

    def check_children(self) -> None:
        """Start again what is due, and schedule the restart of what died."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self.spawn(child)
                    assert child.proc is not None
                    console.print(f"[bold]labtrain up[/]: {child.name} started again (pid {child.proc.pid})")
                continue
            assert child.proc is not None
            code = child.proc.poll()
            if code is None:
                continue
            ran = now - child.started_at
            if ran >= HEALTHY_RUN:
                child.backoff = BACKOFF_FIRST
            _kill_group(child.proc.pid, signal.SIGKILL)  # what it left behind (a Celery pool child...)
            console.print(
                f"[bold yellow]labtrain up[/]: {child.name} (pid {child.proc.pid}) {_describe_exit(code)} "
                f"after {ran:.1f} s; starting it again in {child.backoff:.0f} s"
            )
            child.restart_at = now + child.backoff
            child.backoff = min(child.backoff * 2, BACKOFF_MAX)

    def run(self) -> None:
        """Supervise until a signal asks to stop."""
        while self.stop_reason is None:
            self.check_children()
            time.sleep(POLL)

    def wait_until(self, ready: Callable[[], bool], what: str, watch: Child) -> None:
        """Wait for `ready()` during startup; `watch` exiting meanwhile is fatal."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():
            if self.stop_reason is not None:
                raise UpError(f"stopped ({self.stop_reason}) while waiting for {what}", code=130)
            assert watch.proc is not None
            code = watch.proc.poll()
            if code is not None:
                raise UpError(f"{watch.name} {_describe_exit(code)} before {what}; its messages are above")
            if time.monotonic() > deadline:
                raise UpError(f"{what}: no answer after {STARTUP_TIMEOUT:.0f} s")
            time.sleep(POLL)

    # -- stopping ----------------------------------------------------------------------------
    def stop_all(self) -> None:
        """The API and the workers first, then the embedded Redis; nothing is left running."""
        redis_children = [c for c in self.children if c.name == "redis"]
        self._stop([c for c in self.children if c.name != "redis"])
        self._stop(redis_children)

    def _stop(self, children: list[Child]) -> None:
        for child in children:
            child.restart_at = None
        pending = [c for c in children if c.alive()]
        for step in range(max((len(c.stop_signals) for c in pending), default=0)):
            for child in pending:
                if step < len(child.stop_signals) and child.alive():
                    assert child.proc is not None
                    if step > 0:
                        console.print(
                            f"[bold yellow]labtrain up[/]: {child.name} still running: {child.stop_signals[step].name}"
                        )
                    child.proc.send_signal(child.stop_signals[step])
            deadline = time.monotonic() + (self.grace if step == 0 else LATER_STEPS_SECONDS)
            while any(c.alive() for c in pending) and time.monotonic() < deadline and not self.force:
                time.sleep(0.05)
            pending = [c for c in pending if c.alive()]
        for child in children:  # whatever is left in each group, leader included
            if child.proc is not None:
                if child.alive():
                    console.print(f"[bold yellow]labtrain up[/]: {child.name} did not stop: killed")
                _kill_group(child.proc.pid, signal.SIGKILL)
                try:
                    child.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    console.print(f"[bold red]labtrain up[/]: {child.name} (pid {child.proc.pid}) survived SIGKILL")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# -- checks before anything starts -----------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface


def check_exposure(host: str, settings: Settings, insecure: bool) -> None:
    try:
        keys = settings.api_key_owners()
    except ValueError as exc:
        raise UpError(str(exc), code=2) from exc
    if not keys and not is_loopback(host) and not insecure:
        raise UpError(
            f"refusing to listen on {host}: without LABTRAIN_API_KEYS anyone who reaches this address could "
            "train, read and delete everything. Set LABTRAIN_API_KEYS=owner:key,..., listen on 127.0.0.1, "
            "or pass --insecure if this network is trusted.",
            code=2,
        )


def check_port_free(host: str, port: int) -> None:
    bind_host = host.strip("[]")
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_host, port))
        except OSError as exc:
            raise UpError(
                f"cannot listen on {host}:{port} ({exc.strerror}); is another labtrain running? "
                "Choose another port with --port or LABTRAIN_PORT."
            ) from exc


def lock_data_dir(data_dir: Path) -> IO[str]:
    """One `labtrain up` per data dir: a second one would take over the embedded Redis's socket."""
    handle = (data_dir / "labtrain-up.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        raise UpError(
            f"another `labtrain up` is running with the data dir {data_dir}; stop it, or give this one "
            "another LABTRAIN_DATA_DIR"
        ) from exc
    return handle


def local_url(host: str, port: int) -> str:
    """The URL a local client uses for the API listening on host:port."""
    connect = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host.strip("[]"), host.strip("[]"))
    if ":" in connect:
        connect = f"[{connect}]"
    return f"http://{connect}:{port}"


def hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def api_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


# -- the command -----------------------------------------------------------------------------
def serve(settings: Settings, host: str, port: int, workers: int, insecure: bool, grace: float) -> int:
    """Run the service until a signal; the exit code of `labtrain up`."""
    from core.db import upgrade_database
    from worker.run import worker_argv

    check_exposure(host, settings, insecure)
    check_port_free(host, port)
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)

    database = hide_password(settings.resolved_database_url)
    console.print(f"[bold]labtrain up[/]: applying migrations to {database}")
    try:
        upgrade_database(settings.resolved_database_url)
    except Exception as exc:  # a user's database: unreachable, wrong password, ...
        raise UpError(f"could not migrate the database {database}: {exc}") from exc

    env = dict(os.environ)  # the children's environment: ours, plus where to find everything
    env.update(LABTRAIN_DATA_DIR=str(data_dir), LABTRAIN_HOST=host, LABTRAIN_PORT=str(port), PYTHONUNBUFFERED="1")
    supervisor = Supervisor(env, grace)
    supervisor.install_signal_handlers()
    lock: IO[str] | None = None
    try:
        if settings.redis_url:
            redis_url = settings.redis_url
            broker = f"{hide_password(redis_url)} (LABTRAIN_REDIS_URL)"
        else:
            lock = lock_data_dir(data_dir)
            embedded = EmbeddedRedis(socket_path(data_dir, settings.embedded_redis_socket), data_dir / "redis")
            if embedded.answers():
                raise UpError(f"a Redis already answers on {embedded.socket}, left from an earlier run? Stop it first.")
            redis_url = env["LABTRAIN_REDIS_URL"] = embedded.url
            redis_child = supervisor.add(Child("redis", embedded.argv()))
            supervisor.wait_until(embedded.answers, "the embedded Redis answered", redis_child)
            broker = f"embedded Redis at {embedded.url}"

        url = local_url(host, port)
        api_argv = [
            sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app",
            "--host", host.strip("[]"), "--port", str(port),
            "--timeout-graceful-shutdown", "3",  # open event streams must not hold up a Ctrl-C
            "--log-level", settings.log_level.lower(),
        ]  # fmt: skip
        api = supervisor.add(Child("api", api_argv))
        for i in range(1, workers + 1):
            argv = worker_argv(queues=None, concurrency=1, hostname=f"labtrain-up-{i}-{os.getpid()}@%h")
            supervisor.add(Child(f"worker-{i}", argv, (signal.SIGTERM, signal.SIGQUIT, signal.SIGKILL)))
        supervisor.wait_until(lambda: api_answers(url), f"the API answered at {url}/healthz", api)

        console.print(
            f"\n[bold green]labtrain is up[/]\n"
            f"  API       [link={url}]{url}[/link]  (listening on {host}:{port})\n"
            f"  docs      [link={url}/docs]{url}/docs[/link]\n"
            f"  database  {database}\n"
            f"  broker    {broker}\n"
            f"  workers   {workers} here; more with `LABTRAIN_REDIS_URL={hide_password(redis_url)} labtrain worker`\n"
            f"  Ctrl-C stops everything\n"
        )
        supervisor.run()
    finally:
        supervisor.stop_all()
        if lock is not None:
            lock.close()
    console.print("[bold]labtrain up[/]: stopped")
    return 0
