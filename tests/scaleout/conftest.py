"""A cluster for the scale-out tests: the API, PostgreSQL and the test's own Redis on this machine,
and two worker hosts as network namespaces (tests/scaleout/hosts.py), each with its own data
directory and no LABTRAIN_ARTIFACT_DIR: the hosts share nothing but the database and the broker.

Needs root (network namespaces) and PostgreSQL: skipped with the reason otherwise (PostgreSQL's
absence fails instead under LABTRAIN_TEST_REQUIRE_POSTGRES=1, as everywhere).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from core.db import upgrade_database
from tests.conftest import Stack, api_argv, free_port, fresh_database, start_process
from tests.scaleout.hosts import BrokerServer, Forwarder, Host, Workers, network, require_namespaces

# Re-sending in seconds: the reconciler every second, a run silent for 10 s is taken over. So short
# a heartbeat also takes over runs that a loaded machine merely slowed down (harmless: fenced), and
# each takeover is an attempt: more are allowed than the default 3 before a run is given up.
FAST_RECOVERY = {
    "LABTRAIN_RECONCILE_SECONDS": "1",
    "LABTRAIN_HEARTBEAT_STALE_SECONDS": "10",
    "LABTRAIN_MAX_ATTEMPTS": "8",
    "LABTRAIN_CHECKPOINT_SECONDS": "0.3",
    "LABTRAIN_DB_RETRY_SECONDS": "120",  # a cut host keeps retrying until it is back (then finds itself fenced)
}

# What README "Several machines" asks of a worker host's database URL: PostgreSQL ends a session
# left idle inside a transaction after 5 s (a host cut off mid-transaction would otherwise hold
# its experiment's row lock, and the host taking the run over would wait on it for hours), and
# the host's own connections give up on a silent peer after 5 s instead of TCP's 15 minutes.
WORKER_DATABASE_OPTIONS = {
    "options": "-c idle_in_transaction_session_timeout=5s",
    "tcp_user_timeout": "5000",
}


@dataclass
class Cluster:
    stack: Stack  # the API on loopback; its `workers` and `logs` include the namespaced workers
    hosts: dict[str, Host]
    broker: BrokerServer
    workers: Workers
    database_url: str


def worker_database_url(database_url: str, host: Host) -> str:
    """The database URL as seen from inside `host`: the forwarder on its veth, with the options."""
    url = database_url.replace("@127.0.0.1:5432/", f"@{host.host_ip}:{host.pg_port}/", 1)
    assert url != database_url, database_url
    return url + "?" + "&".join(f"{k}={quote(v)}" for k, v in WORKER_DATABASE_OPTIONS.items())


@contextmanager
def start_cluster(
    tmp_path: Path, *, env_extra: dict[str, str] | None = None, workers_on: tuple[str, ...] = ("a", "b")
) -> Iterator[Cluster]:
    """Migrations applied to a fresh PostgreSQL database, the test's Redis, two worker hosts with a
    worker (two training processes) on each host named in `workers_on`, and the API; all stopped
    and removed at the end."""
    require_namespaces()
    with fresh_database("postgresql", tmp_path) as database_url, network(tmp_path) as host_list:
        hosts = {h.label: h for h in host_list}
        upgrade_database(database_url)
        broker = BrokerServer(tmp_path, [h.host_ip for h in host_list])
        forwarder = Forwarder(("127.0.0.1", 5432))
        stack: Stack | None = None
        try:
            broker.start()
            for host in host_list:
                host.pg_port = forwarder.listen(host.host_ip)
            env = {k: v for k, v in os.environ.items() if not k.startswith("LABTRAIN_")}
            api_dir = tmp_path / "api"
            api_dir.mkdir()
            env.update(
                LABTRAIN_DATABASE_URL=database_url,
                LABTRAIN_REDIS_URL=broker.url(),
                LABTRAIN_DATA_DIR=str(api_dir),
                LABTRAIN_DEVICE="cpu",
                LABTRAIN_LOG_LEVEL="INFO",
                PYTHONUNBUFFERED="1",
            )
            env.update(FAST_RECOVERY | (env_extra or {}))  # env_extra may override the recovery settings
            port = free_port()
            api_log = api_dir / "api.log"
            api = start_process(api_argv(port), env, api_log)
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0)
            stack = Stack(
                f"http://127.0.0.1:{port}", database_url, broker.url(), env, client, api, logs={"api": api_log}
            )
            stack.data_dir, stack.port = api_dir, port
            workers = Workers(env, processes=stack.workers, logs=stack.logs)
            for host in host_list:
                workers.host_env[host.label] = {
                    "LABTRAIN_DATABASE_URL": worker_database_url(database_url, host),
                    "LABTRAIN_REDIS_URL": broker.url(host.host_ip),
                    "LABTRAIN_DATA_DIR": str(host.data_dir),
                }
            for label in workers_on:
                workers.start(hosts[label])
            stack.wait_ready(len(workers_on))
            yield Cluster(stack, hosts, broker, workers, database_url)
        finally:
            if stack is not None:
                stack.close()  # the API and every worker, before their network goes
            forwarder.close()
            broker.stop()
