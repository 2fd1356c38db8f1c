"""Prediction latency and throughput on a real stack (Redis, a database, one Celery worker, the
API under uvicorn), each beside the in-process call of the same network (`Predictor.predict`,
the limit: no HTTP, no database, no JSON):

- single row, cached model: p50 / p99 of sequential requests over loopback HTTP (keep-alive),
  for the exercise 1 MLP (the report's model22: spirals, 3×8 ReLU) and the exercise 2 CNN
  (digits, one convolution of 8 filters of 5×5, 11,738 parameters);
- cold: the first request of a fresh API process (imports torch, reads the blob, builds the
  network), and requests that miss the cache (a second API with LABTRAIN_MODEL_CACHE_SIZE=1,
  asked for the two models in turn: every request reads and builds its model);
- requests per second from 16 concurrent clients (one asyncio client), single rows, errors counted;
- rows per second in batches of 1,000 rows;
- the API process's CPU time per request (psutil), which other work on the machine disturbs
  less than wall-clock figures do: 1 / (CPU per request) is what one API process can serve
  with a core to itself.

Run: `.venv/bin/python -m bench.predict_latency [--database-url URL] [--redis URL]`
(default: a temporary SQLite file, and a free database of the Redis on 127.0.0.1:6379; see bench/stack.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import time
from typing import Any

import httpx
import numpy as np
import psutil

from bench.stack import start_stack

MLP = {
    "name": "model22",
    "dataset": {"name": "spirals", "params": {"n_samples": 2000, "noise": 0.1}, "split": {"val": 0.2, "test": 0.2}},
    "model": {"type": "mlp", "hidden_layers": 3, "neurons": 8, "activation": "relu"},
    "loss": "bce",
    "optimizer": {"name": "adam", "lr": 0.01},
    "batch_size": 128,
    "epochs": 20,
}
CNN = {
    "name": "cnn-1x8x5",
    "dataset": {"name": "digits", "params": {"n_samples": 1000}},
    "model": {"type": "cnn", "conv_layers": 1, "filters": 8, "kernel_size": 5, "hidden_layers": 0},
    "loss": "ce",
    "optimizer": {"name": "adam", "lr": 0.01},
    "batch_size": 64,
    "epochs": 3,
}


def q(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.2f} ms / {q(xs, 0.99) * 1e3:.2f} ms"


def cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    times = psutil.Process(process.pid).cpu_times()
    return times.user + times.system


def predict_url(experiment_id: str) -> str:
    return f"/experiments/{experiment_id}/predictions"


def sequential(client: httpx.Client, experiment_id: str, rows: list[Any], n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        response = client.post(predict_url(experiment_id), json={"inputs": [rows[i % len(rows)]]})
        times.append(time.perf_counter() - t0)
        assert response.status_code == 200, response.text
    return times


def in_process(predictor: Any, rows: list[Any], n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        predictor.predict([rows[i % len(rows)]])
        times.append(time.perf_counter() - t0)
    return times


def concurrent(base_url: str, experiment_id: str, rows: list[Any], total: int, clients: int) -> tuple[float, int]:
    """Requests per second and errors, `clients` requests in flight at all times."""

    async def run(n: int) -> tuple[float, int]:
        errors = 0
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

            async def loop(k: int, offset: int) -> None:
                nonlocal errors
                for i in range(k):
                    body = {"inputs": [rows[(offset + i) % len(rows)]]}
                    if (await client.post(predict_url(experiment_id), json=body)).status_code != 200:
                        errors += 1

            t0 = time.perf_counter()
            await asyncio.gather(*[loop(n // clients, c) for c in range(clients)])
            return (n // clients) * clients / (time.perf_counter() - t0), errors

    asyncio.run(run(max(clients, total // 10)))  # warm-up: connections, threadpool
    return asyncio.run(run(total))


def batches(client: httpx.Client, experiment_id: str, rows: list[Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        response = client.post(predict_url(experiment_id), json={"inputs": rows})
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == len(rows)
    return n * len(rows) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="the Redis server (a free db is reserved)")
    parser.add_argument("--requests", type=int, default=2000, help="sequential single-row requests per model")
    parser.add_argument("--concurrent-requests", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batches", type=int, default=30, help="requests of 1,000 rows")
    args = parser.parse_args()

    results: dict[str, Any] = {}
    with start_stack(database_url=args.database_url, redis_base_url=args.redis) as stack:
        database_url, api, base_url = stack.database_url, stack.api, stack.base_url
        assert api is not None
        with httpx.Client(base_url=base_url, timeout=60) as client:
            ids = {}
            for name, spec in (("mlp", MLP), ("cnn", CNN)):
                ids[name] = client.post("/experiments", json=spec).json()["id"]
            for name, exp_id in ids.items():
                deadline = time.monotonic() + 300
                while (exp := client.get(f"/experiments/{exp_id}").json())["status"] in ("queued", "running"):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{name} did not finish; logs in {stack.tmp}")
                    time.sleep(0.2)
                assert exp["status"] == "succeeded", exp

            import torch

            from ml.data import load_dataset
            from ml.predict import load_predictor
            from ml.spec import validate_spec

            torch.set_num_threads(1)  # the in-process limit runs as the API process does (api/model_cache.py)
            torch.backends.mkldnn.enabled = False

            rows, predictors = {}, {}
            for name, spec in (("mlp", MLP), ("cnn", CNN)):
                dataset = load_dataset(validate_spec(spec).spec)
                rows[name] = dataset.x[:1000].tolist()
                predictors[name] = load_predictor(client.get(f"/experiments/{ids[name]}/model").content)

            # Cold: this API process has not predicted yet (torch not imported, nothing cached).
            t0 = time.perf_counter()
            assert client.post(predict_url(ids["mlp"]), json={"inputs": [rows["mlp"][0]]}).status_code == 200
            results["cold_process"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            assert client.post(predict_url(ids["cnn"]), json={"inputs": [rows["cnn"][0]]}).status_code == 200
            results["cold_model"] = time.perf_counter() - t0

            # Baselines for the CPU per request: a route with no I/O, and a read of one row.
            for name, path in (("healthz", "/healthz"), ("read", f"/experiments/{ids['mlp']}")):
                cpu0 = cpu_seconds(api)
                for _ in range(args.requests):
                    assert client.get(path).status_code == 200
                results[f"cpu_{name}"] = (cpu_seconds(api) - cpu0) / args.requests
            for name in ("mlp", "cnn"):
                sequential(client, ids[name], rows[name], 200)  # warm-up
                cpu0 = cpu_seconds(api)
                results[f"http_{name}"] = sequential(client, ids[name], rows[name], args.requests)
                results[f"cpu_{name}"] = (cpu_seconds(api) - cpu0) / args.requests
                in_process(predictors[name], rows[name], 200)
                results[f"inproc_{name}"] = in_process(predictors[name], rows[name], args.requests)
                batches(client, ids[name], rows[name], 2)
                results[f"batch_http_{name}"] = batches(client, ids[name], rows[name], args.batches)
                t0 = time.perf_counter()
                for _ in range(args.batches):
                    predictors[name].predict(rows[name])
                results[f"batch_inproc_{name}"] = args.batches * len(rows[name]) / (time.perf_counter() - t0)
            for name in ("mlp", "cnn"):
                results[f"rps_{name}"] = concurrent(
                    base_url, ids[name], rows[name], args.concurrent_requests, args.clients
                )

        # Misses: a cache of one model, asked for the two in turn.
        miss_url = stack.start_api("api-miss.log", LABTRAIN_MODEL_CACHE_SIZE="1")
        with httpx.Client(base_url=miss_url, timeout=60) as client:
            client.post(predict_url(ids["mlp"]), json={"inputs": [rows["mlp"][0]]})  # imports torch
            misses: dict[str, list[float]] = {"mlp": [], "cnn": []}
            for i in range(200):
                name = ("cnn", "mlp")[i % 2]
                misses[name] += sequential(client, ids[name], rows[name], 1)
            results["miss"] = misses

    backend = database_url.split(":", 1)[0]
    print(
        f"## {backend}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, one API process, "
        f"torch {__import__('torch').__version__}, {np.__name__} {np.__version__}"
    )
    print(
        f"API CPU per single-row request: MLP {results['cpu_mlp'] * 1e3:.2f} ms, "
        f"CNN {results['cpu_cnn'] * 1e3:.2f} ms (GET /healthz {results['cpu_healthz'] * 1e3:.2f} ms, "
        f"GET /experiments/{{id}} {results['cpu_read'] * 1e3:.2f} ms); "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(
        f"cold: first request of a fresh API process {results['cold_process'] * 1e3:.0f} ms (MLP; imports torch); "
        f"first request for a model not cached {results['cold_model'] * 1e3:.1f} ms (CNN)"
    )
    for name, label in (("mlp", "exercise 1 MLP"), ("cnn", "exercise 2 CNN")):
        rps, errors = results[f"rps_{name}"]
        print(
            f"{label}: single row p50/p99 over HTTP {ms(results[f'http_{name}'])}, in process "
            f"{ms(results[f'inproc_{name}'])}; uncached (cache of 1) {ms(results['miss'][name])}; "
            f"{rps:.0f} requests/s from {args.clients} clients ({errors} errors); "
            f"batches of 1,000: {results[f'batch_http_{name}']:.0f} rows/s over HTTP, "
            f"{results[f'batch_inproc_{name}']:.0f} rows/s in process"
        )


if __name__ == "__main__":
    main()
