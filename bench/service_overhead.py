"""The service's overhead and submission rate, on a real stack (Redis, a database, one Celery
worker, the API over HTTP):

- overhead: for a 1-epoch experiment, the time from `POST /experiments` to `succeeded` minus the
  training time the worker measured inside `ml.train.train` (`train_seconds`): queueing, claim,
  per-epoch writes, storing the artifact and the final status. Measured twice: by the client
  (POST sent → first GET that sees `succeeded`, polling every 2 ms) and from the stored
  timestamps (finished_at - created_at - train_seconds), which excludes the HTTP round trips.
- submissions per second: `POST /experiments` from concurrent clients (validation, insert,
  commit, send_task); the specs go to the gpu queue, which no benchmark worker serves, so the
  worker does not compete for the CPU.

Run: `.venv/bin/python -m bench.service_overhead [--database-url URL] [--redis URL]`
(default: a temporary SQLite file, and a free database of the Redis on 127.0.0.1:6379; see bench/stack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from datetime import datetime

import httpx

from bench.stack import start_stack

SPEC = {
    "name": "overhead",
    "dataset": {"name": "spirals", "params": {"n_samples": 1000, "noise": 0.1}},
    "model": {"type": "mlp", "hidden_layers": 2, "neurons": 8},
    "optimizer": {"name": "adam", "lr": 0.01},
    "batch_size": 128,
    "epochs": 1,
}


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def measure_overhead(client: httpx.Client, runs: int) -> dict[str, list[float]]:
    client_side, stored, train = [], [], []
    for i in range(runs):
        t0 = time.perf_counter()
        exp = client.post("/experiments", json=SPEC | {"name": f"overhead-{i}"}).json()
        while True:
            current = client.get(f"/experiments/{exp['id']}").json()
            if current["status"] not in ("queued", "running"):
                break
            time.sleep(0.002)
        elapsed = time.perf_counter() - t0
        assert current["status"] == "succeeded", current
        client_side.append(elapsed - current["train_seconds"])
        stored.append(_ts(current["finished_at"]) - _ts(current["created_at"]) - current["train_seconds"])
        train.append(current["train_seconds"])
    return {"client": client_side, "stored": stored, "train": train}


def measure_submissions(base_url: str, total: int, concurrency: int) -> float:
    """POSTs per second from `concurrency` concurrent requests (one asyncio client: the load
    generator shares this machine's cores with the API, so it must be cheap)."""
    parked = SPEC | {"device": "cuda"}  # the gpu queue: nothing trains them

    async def run(n: int) -> float:
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

            async def submit(k: int) -> None:
                for _ in range(k):
                    assert (await client.post("/experiments", json=parked)).status_code == 202

            t0 = time.perf_counter()
            await asyncio.gather(*[submit(n // concurrency) for _ in range(concurrency)])
            return (n // concurrency) * concurrency / (time.perf_counter() - t0)

    asyncio.run(run(max(concurrency, total // 10)))  # warm-up: connections, caches
    return asyncio.run(run(total))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="the Redis server (a free db is reserved)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()

    with start_stack(database_url=args.database_url, redis_base_url=args.redis, uvicorn_workers=args.api_workers) as s:
        database_url = s.database_url
        measure_overhead(s.client, 2)  # warm-up: the worker's first run imports and compiles
        o = measure_overhead(s.client, args.runs)
        rate = measure_submissions(s.base_url, args.posts, args.concurrency)

    def q(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]

    backend = database_url.split(":", 1)[0]
    print(
        f"## {backend}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 worker, "
        f"{args.api_workers} uvicorn process(es)"
    )
    print(
        f"overhead, client side (POST → succeeded seen, minus train_seconds): median "
        f"{statistics.median(o['client']):.3f} s, p90 {q(o['client'], 0.9):.3f} s over {args.runs} runs"
    )
    print(
        f"overhead, stored timestamps (finished_at - created_at - train_seconds): median "
        f"{statistics.median(o['stored']):.3f} s, p90 {q(o['stored'], 0.9):.3f} s"
    )
    print(f"train_seconds of the 1-epoch run (inside the worker): median {statistics.median(o['train']):.3f} s")
    print(f"POST /experiments: {rate:.0f} per second ({args.concurrency} concurrent clients, {args.posts} requests)")


if __name__ == "__main__":
    main()
