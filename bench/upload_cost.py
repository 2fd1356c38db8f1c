"""What an upload costs to check: time and peak memory of `ml.datasets` reading hostile and legal
files within the API's default limits, against the implementation before issue 13 (read from
git, commit 80608a1: pandas per column, a quadratic duplicate check, np.load of whole arrays).

    .venv/bin/python -m bench.upload_cost [--baseline-commit 80608a1] [--skip-baseline]

Each case runs in a fresh Python process, so its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CASE = r"""
import json, resource, sys, time, types
sys.path.insert(0, {root!r})
from ml.datasets import DatasetError, UploadLimits, read_csv, read_npz
data = open({path!r}, "rb").read()
kind, impl = {kind!r}, {impl!r}
limits = UploadLimits(max_columns=10_000, max_cells=50_000_000, max_inflated_bytes=1 << 30)
if impl == "baseline":
    old = types.ModuleType("old_files")
    exec(compile(open({old!r}).read(), "old_files.py", "exec"), old.__dict__)
start = time.perf_counter()
try:
    if impl == "baseline":
        (old.from_csv(data, "target") if kind == "csv" else old.from_npz(data))
    elif kind == "csv":
        read_csv(data, "target", limits=limits, keep=False)
    else:
        read_npz(data, limits=limits, keep=False)
    outcome = "accepted"
except DatasetError as exc:
    outcome = type(exc).__name__
except MemoryError:
    outcome = "MemoryError"
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "outcome": outcome,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def wide_csv(columns: int, rows: int) -> bytes:
    rng = np.random.default_rng(0)
    header = ",".join(f"f{i}" for i in range(columns - 1)) + ",target"
    lines = [",".join(f"{v:.3f}" for v in rng.normal(size=columns - 1)) + f",{r % 2}" for r in range(rows)]
    return ("\n".join([header, *lines]) + "\n").encode()


def npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def declared_npz() -> bytes:
    """An archive whose x header declares (10,000,000, 1,000,000) float32: 36 TiB."""
    import zipfile

    def member(shape: tuple[int, ...], descr: str) -> bytes:
        out = io.BytesIO()
        np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
        return out.getvalue() + b"\0" * 64

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", member((10_000_000, 1_000_000), "<f4"))
        archive.writestr("y.npy", member((10_000_000,), "<i8"))
    return out.getvalue()


def run(kind: str, impl: str, path: Path, old: Path) -> dict[str, object]:
    code = CASE.format(root=str(ROOT), path=str(path), kind=kind, impl=impl, old=str(old))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        return {"seconds": float("nan"), "outcome": f"crashed: {done.stderr.strip().splitlines()[-1:]}", "peak_mib": 0}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-commit", default="80608a1")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    cases = {
        "csv 40,000 columns x 12 rows (refused)": ("csv", wide_csv(40_000, 12)),
        "csv 10,000 columns x 12 rows (legal)": ("csv", wide_csv(10_000, 12)),
        "csv 10 columns x 400,000 rows (legal)": ("csv", wide_csv(10, 400_000)),
        "npz declaring 36 TiB (refused)": ("npz", declared_npz()),
        "npz 60,000 x 2,000 float32 zeros (legal)": (
            "npz",
            npz(x=np.zeros((60_000, 2_000), dtype=np.float32), y=np.arange(60_000) % 2),
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old_files.py"
        if not args.skip_baseline:
            source = subprocess.run(
                ["git", "show", f"{args.baseline_commit}:ml/datasets/files.py"],
                cwd=ROOT, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            old.write_text(source)
        print("| file | bytes | now: s | now: peak MiB | outcome | before: s | before: peak MiB | before: outcome |")
        print("|---|---|---|---|---|---|---|---|")
        for label, (kind, data) in cases.items():
            path = Path(tmp) / f"case.{kind}"
            path.write_bytes(data)
            now = run(kind, "now", path, old)
            before = run(kind, "baseline", path, old) if not args.skip_baseline else None
            cells = [label, f"{len(data):,}", f"{now['seconds']:.3f}", f"{now['peak_mib']:.0f}", str(now["outcome"])]
            if before is not None:
                cells += [f"{before['seconds']:.3f}", f"{before['peak_mib']:.0f}", str(before["outcome"])]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
