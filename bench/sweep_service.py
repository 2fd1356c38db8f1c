"""Group training through the service: a sweep's wall time from `POST /sweeps` to every member
terminal, grouped (one `labtrain.train_group` task) against ungrouped (the same sweep with
LABTRAIN_GROUP_MAX_MEMBERS=1 on the API that plans the groups, so 25 tasks one after another)
and against plain PyTorch DataLoader loops (`bench.train_speed.plain_loop`) in this process.

- the 25-experiment sweep: exercise 1 model4 (studies/exercise1.yaml's base: spirals 3,000
  points, 2-16-16-1 ReLU, MSE, SGD, batch 10, 200 epochs), `grid` of 5 learning rates
  (bench.group_speed.LRS) × `repeats: 5` (seeds 0-4);
- Table 1 of the report (studies/exercise1.yaml, all its rows) as one sweep, grouped and not.

Both APIs share one database, one Redis and the same worker(s), so the two sweeps meet the same
stack; each member's final validation accuracy is compared grouped against ungrouped.

    .venv/bin/python -m bench.sweep_service                  # the figures in bench/README.md
    .venv/bin/python -m bench.sweep_service --quick          # 20 epochs, 5 plain loops, Table 1 epochs / 20
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.group_speed import LRS
from bench.stack import BenchStack, start_stack

STUDY = Path(__file__).resolve().parent.parent / "studies" / "exercise1.yaml"


def study() -> dict[str, Any]:
    return yaml.safe_load(STUDY.read_text())


def model4_sweep(epochs: int) -> dict[str, Any]:
    base = study()["base"] | {"name": "model4", "epochs": epochs}
    return {
        "name": f"ex1-model4-5lr-5seeds-{epochs}ep",
        "base": base,
        "grid": {"optimizer.lr": list(LRS)},
        "repeats": 5,
    }


def table1_sweep(epoch_divisor: int) -> dict[str, Any]:
    s = study()
    body = {"name": s["name"], "base": copy.deepcopy(s["base"]), "variants": copy.deepcopy(s["variants"])}
    if epoch_divisor > 1:
        body["base"]["epochs"] = max(1, body["base"]["epochs"] // epoch_divisor)
        for v in body["variants"]:
            if "epochs" in v:
                v["epochs"] = max(1, v["epochs"] // epoch_divisor)
    return body


def run_sweep(client: httpx.Client, body: dict[str, Any], timeout: float) -> tuple[float, dict[str, dict[str, Any]]]:
    """Seconds from the POST to every member terminal, and the members by (name, repeat)."""
    t0 = time.perf_counter()
    response = client.post("/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    while (sweep := client.get(f"/sweeps/{sweep_id}").json())["status"] == "running":
        if time.monotonic() > deadline:
            raise SystemExit(f"sweep {sweep_id} still running after {timeout:.0f} s: {sweep['counts']}")
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    members = {}
    for m in sweep["members"]:
        exp = client.get(f"/experiments/{m['experiment_id']}").json()
        members[f"{m['name']}#{m['repeat']}"] = exp
    return seconds, members


def compare(grouped: dict[str, dict[str, Any]], alone: dict[str, dict[str, Any]]) -> tuple[float, str, int]:
    """The largest |val accuracy grouped - ungrouped| over the members, which member, and how
    many members are not `succeeded` in both."""
    worst, where, not_ok = 0.0, "", 0
    for key, g in grouped.items():
        a = alone[key]
        if g["status"] != "succeeded" or a["status"] != "succeeded":
            not_ok += 1
            continue
        diff = abs(g["metrics"]["latest"]["val_accuracy"] - a["metrics"]["latest"]["val_accuracy"])
        if diff > worst or not where:
            worst, where = diff, key
    return worst, where, not_ok


def plain_loops(epochs: int, count: int) -> tuple[float, float]:
    """Seconds for `count` of the 25 plain loops (one per learning rate in turn), and that time
    scaled to 25 (every loop does the same number of steps)."""
    import torch

    from bench.train_speed import plain_loop

    base = study()["base"] | {"epochs": epochs}
    specs = [base | {"seed": s, "optimizer": {"name": "sgd", "lr": lr}} for s in range(5) for lr in LRS]
    torch.set_num_threads(1)  # as the worker trains these small models
    plain_loop(specs[0] | {"epochs": 1})  # imports, dataset generation
    t0 = time.perf_counter()
    for spec in specs[:count]:
        plain_loop(spec)
    seconds = time.perf_counter() - t0
    return seconds, seconds * len(specs) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=200, help="epochs of each of the 25 model4 runs")
    parser.add_argument("--plain", type=int, default=25, help="how many of the 25 plain loops to time (scaled to 25)")
    parser.add_argument("--table-divisor", type=int, default=1, help="divide Table 1's epochs by this")
    parser.add_argument("--no-table", action="store_true", help="skip Table 1")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="--epochs 20 --plain 5 --table-divisor 20")
    parser.add_argument("--database-url")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="the Redis server (a free db is reserved)")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.plain, args.table_divisor = 20, 5, 20
    load = [os.getloadavg()[0]]

    with start_stack(
        database_url=args.database_url, redis_base_url=args.redis, workers=args.workers, log_level="INFO"
    ) as stack:
        print(f"stack: {args.workers} worker(s), {stack.database_url.split(':')[0]}, logs in {stack.tmp}", flush=True)
        ungrouped = httpx.Client(base_url=stack.start_api("api-ungrouped.log", LABTRAIN_GROUP_MAX_MEMBERS="1"),
                                 timeout=60)  # fmt: skip
        warm(stack)
        body = model4_sweep(args.epochs)
        timeout = 60 + args.epochs * 10
        g_s, g_members = run_sweep(stack.client, body, timeout)
        print(f"25 model4, grouped: {g_s:.1f} s", flush=True)
        u_s, u_members = run_sweep(ungrouped, body, timeout)
        print(f"25 model4, ungrouped: {u_s:.1f} s", flush=True)
        load.append(os.getloadavg()[0])
        p_s, p_25 = plain_loops(args.epochs, args.plain)
        print(f"{args.plain} plain loops: {p_s:.1f} s (25: {p_25:.1f} s)", flush=True)
        load.append(os.getloadavg()[0])
        table = None
        if not args.no_table:
            t_body = table1_sweep(args.table_divisor)
            tg_s, tg = run_sweep(stack.client, t_body, 3600)
            print(f"Table 1, grouped: {tg_s:.1f} s", flush=True)
            tu_s, tu = run_sweep(ungrouped, t_body, 3600)
            print(f"Table 1, ungrouped: {tu_s:.1f} s", flush=True)
            groups = stack_groups(stack)
            table = (tg_s, tu_s, compare(tg, tu), len(tg), groups)
            load.append(os.getloadavg()[0])
        ungrouped.close()

    val_rows = 600  # 20% of 3,000
    diff, where, not_ok = compare(g_members, u_members)
    steps = 25 * args.epochs * 180  # 1,800 training rows at batch 10
    print(f"\n## ex1 model4, 25 experiments x {args.epochs} epochs ({steps:,} model-steps), {args.workers} worker(s), "
          f"load average {', '.join(f'{x:.1f}' for x in load)}")  # fmt: skip
    print("| method | seconds | model-steps/s | grouped sweep is faster by |")
    print("|---|---|---|---|")
    plain_label = f"25 plain PyTorch loops ({args.plain} timed, scaled to 25)" if args.plain < 25 else "25 plain loops"
    for name, seconds in [(plain_label, p_25), ("sweep, ungrouped (LABTRAIN_GROUP_MAX_MEMBERS=1)", u_s),
                          ("sweep, grouped", g_s)]:  # fmt: skip
        print(f"| {name} | {seconds:.1f} | {steps / seconds:,.0f} | {seconds / g_s:.1f}x |")
    print(f"targets: >= 20x plain loops: {'met' if p_25 / g_s >= 20 else 'NOT met'} ({p_25 / g_s:.1f}x); "
          f">= 8x ungrouped: {'met' if u_s / g_s >= 8 else 'NOT met'} ({u_s / g_s:.1f}x)")  # fmt: skip
    print(f"val accuracy, grouped vs ungrouped: largest difference {diff:.4f} ({diff * val_rows:.0f} of {val_rows} "
          f"rows, member {where}); members not succeeded in both: {not_ok}")  # fmt: skip
    if table is not None:
        tg_s, tu_s, (t_diff, t_where, t_not_ok), rows, groups = table
        print(f"\n## Table 1 (studies/exercise1.yaml, {rows} rows, epochs / {args.table_divisor})")
        print(f"grouped {tg_s:.1f} s, ungrouped {tu_s:.1f} s: {tu_s / tg_s:.2f}x")
        print(f"group sizes the worker logged (model4's sweep, then Table 1's): {groups}")
        print(f"val accuracy, grouped vs ungrouped: largest difference {t_diff:.4f} ({t_diff * val_rows:.0f} rows, "
              f"{t_where}); rows not succeeded in both: {t_not_ok}")  # fmt: skip


def warm(stack: BenchStack) -> None:
    """One short experiment, so that neither measured sweep pays for the worker's first run."""
    spec = study()["base"] | {"epochs": 1}
    exp = stack.client.post("/experiments", json=spec).json()
    stack.wait_terminal([exp["id"]], timeout=120)


def stack_groups(stack: BenchStack) -> str:
    """The sizes of the groups the workers trained, in their logs' order (model4's, then Table 1's)."""
    sizes = []
    for log in stack.tmp.glob("worker-*.log"):
        sizes += [line.split("group of ")[1].split()[0] for line in log.read_text().splitlines() if "group of " in line]
    return ", ".join(sizes) or "none"


if __name__ == "__main__":
    main()
