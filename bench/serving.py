"""Serving speed against the stack's own ceiling, with wrk (Debian's `wrk` package), in one run:

- predictions: a bare FastAPI + uvicorn endpoint holding the same 2-16-16-1 MLP in memory
  (`/work/shared/bench/bare_predict.py`, or `--bare PATH`) and labtrain's
  `POST /experiments/{id}/predictions` (API keys on, a trained, cached exercise 1 model4), one
  row per request, loaded in turns (bare, labtrain, bare, labtrain, ...) at 8 connections, then
  at one connection (the p50 target);
- submissions: `POST /experiments` (a model4 spec) at 8 connections on SQLite and on
  PostgreSQL (a fresh database, dropped at the end). No worker runs then: experiments queue in
  Redis (LABTRAIN_MAX_QUEUED_PER_OWNER raised for the run).

Each line: requests/s, p50, p99, non-2xx, and the ratio to the bare endpoint of the same round.
wrk runs with one thread (`-t1`); the API and the bare endpoint are one uvicorn process each,
as `labtrain up` starts the API. Run:

    .venv/bin/python -m bench.serving [--duration 10] [--rounds 2] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.stack import free_port, start_stack

BARE = Path("/work/shared/bench/bare_predict.py")
KEY = "bench-key-" + secrets.token_hex(8)
MODEL4 = {
    "name": "model4",
    "dataset": {
        "name": "spirals",
        "params": {"n_samples": 3000, "noise": 0.1},
        "split": {"val": 0.2, "test": 0.2},
        "seed": 0,
    },
    "model": {"type": "mlp", "hidden_layers": 2, "neurons": 16, "activation": "relu"},
    "loss": "mse",
    "optimizer": {"name": "sgd", "lr": 0.01},
    "batch_size": 10,
    "epochs": 3,
}
ROW = {"inputs": [[0.5, -0.25]]}


def lua(path: str, body: dict[str, Any], headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.path = {json.dumps(path)}", f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in {"Content-Type": "application/json",
                                                                            **headers}.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, script: str, tmp: Path, connections: int, duration: int) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99 in ms, non-2xx (wrk counts non-2xx-or-3xx) and errors."""
    lua_file = tmp / f"wrk-{secrets.token_hex(4)}.lua"
    lua_file.write_text(script)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua_file), url],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    failed = 0.0 if errors is None else float(sum(int(n) for n in re.findall(r"\d+", errors.group(0))))
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": float(bad.group(1)) if bad else 0.0, "errors": failed,
            "requests": total}  # fmt: skip


def measured(pid: int, url: str, script: str, tmp: Path, connections: int, duration: int) -> dict[str, float]:
    """wrk's figures plus the server process's CPU time per request (user + system, its threads
    included), which other work on the machine disturbs far less than requests/s."""
    process = psutil.Process(pid)
    before = process.cpu_times()
    result = wrk(url, script, tmp, connections, duration)
    after = process.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return result | {"cpu_ms": 1000 * cpu / max(result["requests"], 1.0)}


def start_bare(path: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"{path.stem}:app", "--app-dir", str(path.parent), "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    with (tmp / "bare.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.post(f"{url}/p", json=ROW).raise_for_status()
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the bare endpoint did not start")


def line(label: str, r: dict[str, float], base: dict[str, float] | None = None) -> str:
    ratio = (
        f"  {r['rps'] / base['rps']:.0%} of bare's req/s, CPU/req {r['cpu_ms'] / base['cpu_ms']:.2f}x" if base else ""
    )
    return (f"{label:<40} {r['rps']:>7,.0f} req/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:7.2f} ms  "
            f"CPU {r['cpu_ms']:.3f} ms/req  non-2xx {r['non2xx']:.0f}  errors {r['errors']:.0f}{ratio}")  # fmt: skip


def predictions(args: argparse.Namespace, tmp: Path) -> None:
    env = {"LABTRAIN_API_KEYS": f"bench:{KEY}", "LABTRAIN_MAX_QUEUED_PER_OWNER": "1000000"}
    auth = {"Authorization": f"Bearer {KEY}"}
    with start_stack(workers=0, env=env) as stack:
        stack.client.headers.update(auth)  # /readyz too: with keys on, every route but /healthz asks for one
        stack.start_worker()
        stack.wait_ready(1)
        response = stack.client.post("/experiments", json=MODEL4)
        response.raise_for_status()
        exp_id = response.json()["id"]
        exp = stack.wait_terminal([exp_id], timeout=300)[exp_id]
        assert exp["status"] == "succeeded", exp
        for name in list(stack.workers):
            stack.stop_worker(name)  # nothing else runs on the machine's two cores
        path = f"/experiments/{exp_id}/predictions"
        stack.client.post(path, json=ROW).raise_for_status()  # loads the model into the cache
        bare, bare_url = start_bare(args.bare, tmp)
        try:
            ours = lua(path, ROW, auth)
            theirs = lua("/p", ROW, {})
            print(f"predictions, one row, wrk -t1, {args.duration} s each (load: {os.getloadavg()[0]:.1f})")
            for connections in (8, 1):
                for i in range(args.rounds):
                    b = measured(bare.pid, bare_url, theirs, tmp, connections, args.duration)
                    o = measured(stack.api.pid, stack.base_url, ours, tmp, connections, args.duration)  # type: ignore[union-attr]
                    print(line(f"  c={connections} round {i + 1}: bare", b))
                    print(line(f"  c={connections} round {i + 1}: labtrain", o, b), flush=True)
        finally:
            bare.terminate()
            bare.wait(10)


def submissions(args: argparse.Namespace, tmp: Path, database_url: str | None, label: str) -> None:
    env = {"LABTRAIN_API_KEYS": f"bench:{KEY}", "LABTRAIN_MAX_QUEUED_PER_OWNER": "10000000"}
    auth = {"Authorization": f"Bearer {KEY}"}
    with start_stack(workers=0, env=env, database_url=database_url) as stack:
        stack.client.headers.update(auth)
        stack.client.post("/experiments", json=MODEL4).raise_for_status()  # warm: imports, first connection
        script = lua("/experiments", MODEL4, auth)
        for i in range(args.rounds):
            r = measured(stack.api.pid, stack.base_url, script, tmp, 8, args.duration)  # type: ignore[union-attr]
            print(line(f"  POST /experiments {label} c=8 round {i + 1}", r), flush=True)


def postgres_database() -> tuple[str, str] | None:
    import psycopg

    for user in ("postgres", "root"):
        for dbname in ("postgres", "test"):
            admin = f"postgresql://{user}@127.0.0.1:5432/{dbname}"
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                    name = f"labtrain_bench_{secrets.token_hex(4)}"
                    conn.execute(f'CREATE DATABASE "{name}"')
                return admin, name
            except psycopg.Error:
                continue
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bare", type=Path, default=BARE)
    parser.add_argument("--skip-predictions", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="labtrain-serving-"))
    if not args.skip_predictions:
        predictions(args, tmp)
    print(f"submissions, wrk -t1 -c8, {args.duration} s each, no worker (load: {os.getloadavg()[0]:.1f})")
    if not args.skip_sqlite:
        submissions(args, tmp, None, "SQLite")
    if not args.skip_postgres:
        created = postgres_database()
        if created is None:
            print("  PostgreSQL does not answer on 127.0.0.1:5432: skipped")
            return
        import psycopg

        admin, name = created
        try:
            submissions(args, tmp, admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
                        + f"/{name}", "PostgreSQL")  # fmt: skip
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
