"""The load run (loopback only): concurrent clients submit tiny experiments and predict against
finished ones while one worker is killed (SIGKILL of its process group: the Celery main process
and its training child) and started again, twice. Then every accepted experiment must reach a
terminal status within a deadline.

Counted: lost (accepted with 202 but not terminal by the deadline), 5xx answers, other errors
(any other non-2xx answer or a transport error), submissions and predictions per second, p50 /
p95 / p99 latency of each, and, for each kill, what became of the experiment the killed worker was
training (its status, attempt, and when it ended after the kill).

    .venv/bin/python -m bench.load                     # 50 clients, 1,000 experiments, 2 workers
    .venv/bin/python -m bench.load --quick             # 10 clients, 100 experiments
    .venv/bin/python -m bench.load --env LABTRAIN_RECONCILE_SECONDS=30  # settings for every process
    .venv/bin/python -m bench.load --hosts             # two worker hosts (root), one cut and restored

With --hosts the workers run on two hosts made of network namespaces (tests/scaleout: root, and
PostgreSQL on 127.0.0.1:5432), sharing only PostgreSQL and a Redis of the run's own with the API;
instead of the kills, host A's link is cut when a third of the experiments are terminal and
restored --cut-seconds later. Counted besides: epochs stored twice or missing, and runs that two
workers finished (their logs), which must both be 0.

Every process runs with RECOVERY (a heartbeat stale after 10 s, the reconciler every 5 s) unless
--env says otherwise: with the defaults (300 s, 30 s) the experiment a killed worker held waits
five minutes before another worker takes it over, longer than this run is worth waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections import Counter
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.stack import BenchStack, start_stack

RECOVERY = {"LABTRAIN_HEARTBEAT_STALE_SECONDS": "10", "LABTRAIN_RECONCILE_SECONDS": "5"}
SPEC = {
    "name": "load",
    "dataset": {"name": "spirals", "params": {"n_samples": 200, "noise": 0.1}},
    "model": {"type": "mlp", "hidden_layers": 2, "neurons": 8},
    "optimizer": {"name": "adam", "lr": 0.01},
    "batch_size": 64,
    "epochs": 3,
}


class Tally:
    def __init__(self) -> None:
        self.accepted: list[str] = []
        self.latency: dict[str, list[float]] = {"submit": [], "predict": []}
        self.server_errors: Counter[str] = Counter()  # "submit 503", ...
        self.other_errors: Counter[str] = Counter()
        self.finished: list[str] = []  # succeeded ids the clients predict against
        self.pending: set[str] = set()  # accepted, not terminal yet (as last seen)
        self.submitted_at: float | None = None

    def record(self, kind: str, seconds: float, response: httpx.Response | None, error: str | None = None) -> bool:
        if response is None:
            self.other_errors[f"{kind} {error}"] += 1
            return False
        self.latency[kind].append(seconds)
        if response.status_code >= 500:
            self.server_errors[f"{kind} {response.status_code}"] += 1
        elif response.status_code >= 300:
            self.other_errors[f"{kind} {response.status_code} {response.text[:120]}"] += 1
        return response.is_success


async def call(client: httpx.AsyncClient, tally: Tally, kind: str, url: str, body: dict[str, Any]) -> Any:
    t0 = time.perf_counter()
    try:
        response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        tally.record(kind, time.perf_counter() - t0, None, type(exc).__name__)
        return None
    return response.json() if tally.record(kind, time.perf_counter() - t0, response) else None


async def client_loop(
    client: httpx.AsyncClient, tally: Tally, quota: list[int], done: asyncio.Event, seed: int
) -> None:
    """Submit until the shared quota is spent, predicting against a finished experiment after each
    submission; then only predict, until every accepted experiment is terminal (or the deadline)."""
    rng = random.Random(seed)
    while not done.is_set():
        if quota[0] > 0:
            quota[0] -= 1
            exp = await call(client, tally, "submit", "/experiments", SPEC | {"seed": rng.randrange(1000)})
            if exp is not None:
                tally.accepted.append(exp["id"])
            if quota[0] <= 0 and tally.submitted_at is None:
                tally.submitted_at = time.perf_counter()
        if tally.finished:
            target = rng.choice(tally.finished)
            point = [rng.uniform(-1, 1), rng.uniform(-1, 1)]
            await call(client, tally, "predict", f"/experiments/{target}/predictions", {"inputs": [point]})
        else:
            await asyncio.sleep(0.05)


async def monitor(client: httpx.AsyncClient, tally: Tally, done: asyncio.Event, deadline: float) -> None:
    """Every 0.5 s: the succeeded experiments the clients predict against (the newest 200) and the
    accepted ones not terminal yet; sets `done` when none is left after the last submission, or
    `deadline` seconds after it."""
    while True:
        await asyncio.sleep(0.5)
        try:
            page = (await client.get("/experiments", params={"status": "succeeded", "limit": 200})).json()
            tally.finished = [e["id"] for e in page["items"]] or tally.finished
            tally.pending = await non_terminal(client) & set(tally.accepted)
        except (httpx.HTTPError, ValueError, KeyError):
            continue
        if tally.submitted_at is not None:
            if not tally.pending or time.perf_counter() - tally.submitted_at > deadline:
                done.set()
                return


async def non_terminal(client: httpx.AsyncClient) -> set[str]:
    ids: set[str] = set()
    for status in ("queued", "running"):
        cursor = None
        while True:
            params: dict[str, Any] = {"status": status, "limit": 200} | ({"cursor": cursor} if cursor else {})
            page = (await client.get("/experiments", params=params)).json()
            ids |= {e["id"] for e in page["items"]}
            if not (cursor := page.get("next_cursor")):
                break
    return ids


async def killer(stack: BenchStack, tally: Tally, kills: int, events: list[dict[str, Any]]) -> None:
    """SIGKILL the same worker slot when 1/(kills+1), 2/(kills+1)... of the experiments are
    terminal; start a new worker 1 s later (as `labtrain up` does)."""
    slot = next(iter(stack.workers))
    for k in range(1, kills + 1):
        while tally.submitted_at is None or len(tally.pending) > len(tally.accepted) * (1 - k / (kills + 1)):
            await asyncio.sleep(0.05)
        running = await asyncio.to_thread(_running_on, stack, slot)
        await asyncio.to_thread(stack.kill_worker, slot)
        events.append({"killed": slot, "at": time.time(), "was_training": running})
        await asyncio.sleep(1.0)
        slot = stack.start_worker()


async def cutter(cluster: Any, tally: Tally, cut_seconds: float, events: list[dict[str, Any]]) -> None:
    """Cut host A off the network when a third of the experiments are terminal; restore it
    `cut_seconds` later."""
    while tally.submitted_at is None or len(tally.pending) > len(tally.accepted) * 2 / 3:
        await asyncio.sleep(0.05)
    host = cluster.hosts["a"]
    looked_until = time.perf_counter() + 10  # cut while it trains something (a run takes a fraction of a second)
    while not (running := await asyncio.to_thread(_running_on, cluster.stack, "@host-a")):
        if time.perf_counter() > looked_until:
            break
    host.cut()
    events.append({"killed": "host-a (cut)", "at": time.time(), "was_training": running})
    try:
        await asyncio.sleep(cut_seconds)
    finally:  # also when the run ends first: the host is never left cut off
        host.restore()


def _running_on(stack: Any, worker: str) -> list[str]:
    """The running experiments of `worker` (or of every worker whose name ends with it)."""
    items = stack.client.get("/experiments", params={"status": "running", "limit": 200}).json()["items"]
    return [e["id"] for e in items if (e.get("worker") or "").endswith(worker)]


def doubles(cluster: Any, ids: set[str]) -> tuple[int, int]:
    """(experiments whose epoch rows are not exactly 1..epochs once each, experiments whose end two
    workers logged), over `ids`."""
    import re

    from sqlalchemy import func, select

    from core.db import create_db_engine, session_factory
    from core.tables import EpochMetric, Experiment

    engine = create_db_engine(cluster.database_url)
    try:
        with session_factory(engine)() as session:
            counts = select(EpochMetric.experiment_id, func.count(), func.count(func.distinct(EpochMetric.epoch)))
            rows = {i: (n, d) for i, n, d in session.execute(counts.group_by(EpochMetric.experiment_id))}
            done = dict(session.execute(select(Experiment.id, Experiment.epochs_done)).all())
    finally:
        engine.dispose()
    bad_epochs = sum(1 for i in ids if rows.get(i, (0, 0)) != (done.get(i), done.get(i)))
    logs = [cluster.workers.log(name) for name in cluster.workers.logs]
    ended = Counter(m for log in logs for m in re.findall(r"experiment (\w+): (?:succeeded|failed|cancelled)", log))
    return bad_epochs, sum(1 for i in ids if ended[i] > 1)


def q(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total", type=int, default=1000, help="experiments to submit")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=300, help="seconds after the last submission")
    parser.add_argument("--quick", action="store_true", help="--total 100 --clients 10")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every process (LABTRAIN_...)")
    parser.add_argument("--database-url")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="the Redis server (a free db is reserved)")
    parser.add_argument("--hosts", action="store_true", help="two worker hosts in network namespaces; one is cut")
    parser.add_argument("--cut-seconds", type=float, default=20.0, help="with --hosts: how long host A is cut off")
    args = parser.parse_args()
    if args.quick:
        args.total, args.clients = 100, 10
    env = RECOVERY | dict(item.split("=", 1) for item in args.env)
    tally, events = Tally(), list[dict[str, Any]]()
    load = [os.getloadavg()[0]]

    cluster: Any = None
    with ExitStack() as resources:
        if args.hosts:
            import tempfile

            from tests.scaleout.conftest import start_cluster

            tmp = Path(tempfile.mkdtemp(prefix="labtrain-load-"))
            cluster = resources.enter_context(start_cluster(tmp, env_extra=env))
            stack = cluster.stack
            args.workers, args.kills = 2, 0
            print(f"cluster: hosts a and b (a worker of 2 processes each), postgresql, logs in {tmp}", flush=True)
        else:
            stack = resources.enter_context(
                start_stack(database_url=args.database_url, redis_base_url=args.redis, workers=args.workers, env=env)
            )
            print(f"stack: {args.workers} workers, {stack.database_url.split(':')[0]}, logs in {stack.tmp}", flush=True)

        async def run() -> tuple[float, float]:
            # keepalive_expiry below uvicorn's 5 s keep-alive timeout: a connection idle for about
            # 5 s (the spare ones the monitor uses) is otherwise closed by the server just as the
            # client sends on it, an httpx.ReadError that says nothing about the API.
            limits = httpx.Limits(max_connections=args.clients + 2, max_keepalive_connections=args.clients + 2,
                                  keepalive_expiry=2.0)  # fmt: skip
            async with httpx.AsyncClient(base_url=stack.base_url, timeout=90, limits=limits) as client:
                done = asyncio.Event()
                tally.pending = {"?"}  # unknown until the monitor's first look
                watch = asyncio.create_task(monitor(client, tally, done, args.deadline))
                chaos = (
                    cutter(cluster, tally, args.cut_seconds, events)
                    if args.hosts
                    else killer(stack, tally, args.kills, events)
                )
                kill = asyncio.create_task(chaos)
                quota = [args.total]
                t0 = time.perf_counter()
                await asyncio.gather(*[client_loop(client, tally, quota, done, seed) for seed in range(args.clients)])
                await watch
                kill.cancel()
                assert tally.submitted_at is not None
                return tally.submitted_at - t0, time.perf_counter() - t0

        submit_seconds, seconds = asyncio.run(run())
        pending = tally.pending
        accepted = set(tally.accepted)
        final = [stack.client.get(f"/experiments/{i}").json() for i in accepted]
        statuses = Counter(e["status"] for e in final)
        attempts = Counter(e["attempt"] for e in final)
        kills = [
            {**e, "after": [stack.client.get(f"/experiments/{i}").json() for i in e["was_training"]]} for e in events
        ]
        doubled = doubles(cluster, accepted) if args.hosts else None
        load.append(os.getloadavg()[0])

    averages = ", ".join(f"{x:.1f}" for x in load)
    print(f"\n## load: {args.clients} clients, {args.total} submissions, {args.workers} workers, "
          f"{len(events)} kills; env {env or 'defaults'}; load average {averages}")  # fmt: skip
    print(f"accepted {len(accepted)} in {submit_seconds:.1f} s; every one terminal {seconds:.1f} s after the first "
          f"POST, or lost: {len(pending)} not terminal {args.deadline:.0f} s after the last submission; "
          f"statuses {dict(statuses)}, attempts {dict(sorted(attempts.items()))}")  # fmt: skip
    print(f"5xx: {sum(tally.server_errors.values())} {dict(tally.server_errors)}; "
          f"other errors: {sum(tally.other_errors.values())} {dict(tally.other_errors)}")  # fmt: skip
    for kind, over in (("submit", submit_seconds), ("predict", seconds)):
        xs = tally.latency[kind]
        print(f"{kind}: {len(xs)} requests in {over:.1f} s, {len(xs) / over:.0f}/s, p50 {q(xs, 0.5) * 1e3:.1f} ms, "
              f"p95 {q(xs, 0.95) * 1e3:.1f} ms, p99 {q(xs, 0.99) * 1e3:.1f} ms")  # fmt: skip
    for e in kills:
        for exp in e["after"]:
            ended = exp["finished_at"] and datetime.fromisoformat(exp["finished_at"]).timestamp() - e["at"]
            print(f"kill of {e['killed']}: it was training {exp['id']}, now {exp['status']} (attempt {exp['attempt']}"
                  + (f", ended {ended:.1f} s after the kill)" if ended else ", never ended)"))  # fmt: skip
        if not e["after"]:
            print(f"kill of {e['killed']}: it was training nothing the API listed as running")
    if doubled is not None:
        print(f"across hosts: {len(accepted) / seconds:.1f} experiments/s terminal; experiments with an epoch "
              f"stored twice or missing: {doubled[0]}; finished by two workers: {doubled[1]}")  # fmt: skip
    if pending:
        print(f"lost: {sorted(pending)[:10]}")


if __name__ == "__main__":
    main()
