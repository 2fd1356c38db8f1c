"""The study table of a sweep: one row per row name with the report's columns, the validation
metrics of the weights each member serves (mean ± std over repeats), the best row marked by the
one ranking rule; rendered as JSON, CSV and aligned markdown. Test metrics never enter."""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from typing import Any

from core.tables import Experiment
from ml.cells import csv_cell, markdown_cell
from ml.ranking import rank_key

BASE_COLUMNS = ("name", "opt", "lr", "bs", "ep")
TEXT_COLUMNS = frozenset({"name", "opt", "act", "loss", "status", "best", "neur", "kept"})


@dataclass(frozen=True)
class Table:
    metric: str | None  # the ranking column
    metrics: list[str]  # the metric columns, in order
    repeats: int
    columns: list[str]
    rows: list[dict[str, Any]]


def _architecture(spec: dict[str, Any], cnn: bool, two_targets: bool) -> dict[str, Any]:
    """The report's architecture columns from a normalized spec (the base network: the digit
    head for two targets)."""
    model = spec["model"]
    widths = model.get("widths")
    hidden = len(widths) if widths is not None else model["hidden_layers"]
    convs = model["conv_layers"] if model["type"] == "cnn" else 0
    columns: dict[str, Any] = {}
    if cnn:
        columns |= {"convlay": convs, "ks": model["kernel_size"] if convs else 0}
    neurons: Any = "/".join(map(str, widths)) if widths is not None else model["neurons"]
    columns |= {
        "hidlay": hidden,
        "neur": neurons if hidden else None,
        "act": model["activation"] if hidden or convs else None,
        "loss": spec["loss"],
    }
    if two_targets:
        columns["shared"] = model.get("shared_layers", 0)
    return columns


def _metric_columns(experiments: list[Experiment]) -> list[str]:
    seen: list[str] = []
    for e in experiments:
        for key in _shown(e) or {}:
            if (key.startswith("val_accuracy") or key == "val_rmse") and key not in seen:
                seen.append(key)
    if not seen:  # nothing trained yet: the task says which metric will come
        seen = ["val_rmse"] if experiments and all(e.task == "regression" for e in experiments) else ["val_accuracy"]
    return sorted(seen, key=lambda k: (k != "val_accuracy", k == "val_rmse", seen.index(k)))


def _shown(e: Experiment) -> dict[str, Any] | None:
    """The validation metrics a table shows for a member: those of its kept weights (what it
    serves: spec `keep`), the latest epoch's until a kept model is known."""
    return e.served_metrics or e.latest_metrics


def _row_status(experiments: list[Experiment]) -> str:
    counts: dict[str, int] = {}
    for e in experiments:
        counts[e.status] = counts.get(e.status, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def build_table(members: list[dict[str, Any]], experiments: list[Experiment], repeats: int) -> Table:
    """One row per row name, in sweep order: the report's columns, the validation metrics of
    the kept weights (`kept`: the spec's `keep`, best or last epoch; the mean and standard
    deviation over repeats; over the succeeded members once any succeeded), and `best` on the
    best fully succeeded row (the smaller network among equals). Test metrics never enter."""
    by_id = {e.id: e for e in experiments}
    groups: dict[str, list[Experiment]] = {}
    for m in members:
        if m["experiment_id"] in by_id:
            groups.setdefault(m["name"], []).append(by_id[m["experiment_id"]])
    cnn = any(e.spec["model"]["type"] == "cnn" for e in experiments)
    two_targets = any(e.task == "multi_target" for e in experiments)
    metrics = _metric_columns(experiments)
    rows: list[dict[str, Any]] = []
    for name, group in groups.items():
        spec = group[0].spec
        row: dict[str, Any] = {
            "name": name,
            "opt": spec["optimizer"]["name"],
            "lr": spec["optimizer"]["lr"],
            "bs": spec["batch_size"],
            "ep": spec["epochs"],
            **_architecture(spec, cnn, two_targets),
            "par": group[0].param_count,
        }
        succeeded = [e for e in group if e.status == "succeeded"]
        measured = succeeded or [e for e in group if _shown(e)]
        for key in metrics:
            values = [float(v) for e in measured if (v := (_shown(e) or {}).get(key)) is not None]
            mean = statistics.fmean(values) if values else None
            row[key] = mean
            if repeats > 1:
                row[f"{key}_mean"] = mean
                row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        row["kept"] = spec.get("keep", "best")
        row["n"] = len(measured)
        row["status"] = _row_status(group)
        row["best"] = False
        row["test_evaluations"] = sum(e.test_evaluations for e in group)
        row["experiment_ids"] = [e.id for e in group]
        rows.append(row)
    metric = "val_accuracy" if "val_accuracy" in metrics else "val_rmse" if "val_rmse" in metrics else None
    if metric is not None:
        candidates = [r for r in rows if r["status"] == "succeeded" and r[metric] is not None]
        if candidates:
            # The one ranking rule (ml.ranking) on the row's means; among equals the smaller
            # network, then the first row.
            min(candidates, key=lambda r: (rank_key(r), r["par"]))["best"] = True
    columns = [c for c in (rows[0] if rows else {"name": None}) if c != "experiment_ids"]
    return Table(metric, metrics, repeats, columns, rows)


def table_csv(table: Table) -> str:
    """Every column with its raw value (empty for none), a header row first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in table.columns])
    for row in table.rows:
        # csv_cell: a row name like `=1+1` is text to a spreadsheet, never a formula.
        writer.writerow([csv_cell(row[c]) for c in table.columns])
    return out.getvalue()


def _number(key: str, value: float | None, std: float | None = None) -> str:
    if value is None:
        return "-"
    if key.startswith("val_accuracy"):  # a percentage, as the report writes it
        return f"{100 * value:.1f}%" if std is None else f"{100 * value:.1f} ± {100 * std:.1f}%"
    return f"{value:.0f}" if std is None else f"{value:.0f} ± {std:.0f}"


def table_markdown(table: Table) -> str:
    """The report's table as aligned markdown: metrics as percentages (accuracy) or units (RMSE),
    mean ± standard deviation with repeats, ✓ on the best row."""
    hidden = {f"{k}_{s}" for k in table.metrics for s in ("mean", "std")}
    if table.repeats == 1:
        hidden.add("n")
    if not any(r["test_evaluations"] for r in table.rows):
        hidden.add("test_evaluations")
    columns = [c for c in table.columns if c not in hidden]
    header = ["tests" if c == "test_evaluations" else c for c in columns]
    cells: list[list[str]] = []
    for row in table.rows:
        line = []
        for c in columns:
            value = row[c]
            if c in table.metrics:
                line.append(_number(c, value, row.get(f"{c}_std")))
            elif c == "best":
                line.append("✓" if value else "")
            elif c == "lr" and isinstance(value, float):
                line.append(f"{value:g}")
            else:
                line.append("-" if value is None else markdown_cell(value))
        cells.append(line)
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    right = [c not in TEXT_COLUMNS for c in columns]

    def fmt(values: list[str]) -> str:
        padded = (v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right, strict=True)) + "|"
    return "\n".join([fmt(header), rule, *(fmt(line) for line in cells)]) + "\n"
