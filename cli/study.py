"""`labtrain study run studies/<file>.yaml`: a study from the reference report, through the API.

A study file is the body of `POST /sweeps` plus two sections the API never sees: `report` (the
numbers the report published per row: `par`, `val` for its metric, `test`, per-target values)
and `evaluate` (`rows`: the row names to evaluate on the test split afterwards; `best` is the
table's best row by validation). Running a study:

1. submits the sweep (with an Idempotency-Key derived from the file's content, so running the
   same file again follows the same sweep instead of training it twice);
2. follows it until every member ended, calling `on_progress` with the sweep at each poll;
3. reads the table (`GET /sweeps/{id}/table`) and sets it beside the report's numbers;
4. only then evaluates the chosen rows on the test split (`POST /experiments/{id}/evaluations`,
   every repeat of a row), so no selection ever saw the test set; a model evaluated before (the
   same file run again) is not evaluated again: its first recorded test evaluation is used;
5. writes `studies/results/<study>.md` (the comparison, our table, the test results),
   `<study>.json` (everything, raw) and `<study>.csv` (our table).

Every function takes a `labtrain.Client` (the one HTTP layer of the client and the command; an
`httpx.Client` whose base_url is the service is wrapped in one); none prints. Only HTTP and
YAML: the CLI does not import the service's code.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]

from labtrain import APIError, Client, Sweep, WaitTimeout


class StudyError(Exception):
    """A study that cannot run: a bad file, a refused sweep, a row that cannot be evaluated."""


@dataclass(frozen=True)
class Study:
    name: str  # the file's stem: results are written under this name
    body: dict[str, Any]  # what POST /sweeps receives
    report: dict[str, Any]
    evaluate: list[str]

    @property
    def key(self) -> str:
        """An Idempotency-Key for this exact request: resubmitting follows the same sweep."""
        digest = hashlib.sha256(json.dumps(self.body, sort_keys=True).encode()).hexdigest()[:24]
        return f"study-{self.name}-{digest}"


def load_study(path: Path) -> Study:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise StudyError(f"{path}: a study file is a mapping (the POST /sweeps body with report and evaluate)")
    report = data.pop("report", {}) or {}
    evaluate = (data.pop("evaluate", {}) or {}).get("rows", [])
    return Study(path.stem, data, report, list(evaluate))


def as_client(client: Client | httpx.Client) -> Client:
    return client if isinstance(client, Client) else Client(http=client)


def submit(client: Client, study: Study) -> Sweep:
    """POST /sweeps; the same file again returns the sweep it already created."""
    try:
        return client.submit_sweep(study.body, idempotency_key=study.key)
    except APIError as exc:
        raise StudyError(f"POST /sweeps: {exc}") from exc


def follow(
    sweep: Sweep,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    interval: float = 2.0,
    timeout: float | None = None,
) -> Sweep:
    """Poll the sweep until no member is queued or running (an API restarting meanwhile is
    waited for); returns it refreshed."""
    try:
        return sweep.wait(timeout, None if on_progress is None else lambda s: on_progress(s.data), interval)
    except WaitTimeout as exc:
        raise StudyError(f"{exc} after {timeout:g} s") from exc


def read_table(sweep: Sweep, fmt: str = "json") -> Any:
    return sweep.table_data(fmt)


# -- ours beside the report's -------------------------------------------------------------------


def _report_keys(study: Study) -> list[str]:
    """The metric columns the report published: `val` (its metric) and per-target values."""
    keys: list[str] = []
    for row in study.report.get("rows", {}).values():
        keys += [k for k in row if (k == "val" or k.startswith("val_")) and k not in keys]
    return keys


def compare(study: Study, table: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per row of our table: our par and validation metric(s) beside the report's."""
    metric = study.report.get("metric") or table.get("metric") or "val_accuracy"
    published = study.report.get("rows", {})
    lines = []
    for row in table["rows"]:
        theirs = published.get(row["name"], {})
        line: dict[str, Any] = {"name": row["name"], "par": row["par"], "report_par": theirs.get("par")}
        for key in _report_keys(study) or ["val"]:
            ours_key = metric if key == "val" else key
            line[ours_key] = row.get(ours_key)
            line[f"{ours_key}_std"] = row.get(f"{ours_key}_std")
            line[f"report_{ours_key}"] = theirs.get(key)
        line["status"], line["best"] = row["status"], row["best"]
        lines.append(line)
    return lines


def _fmt(key: str, value: Any, std: Any = None) -> str:
    if value is None:
        return "-"
    if "accuracy" in key:
        return f"{100 * value:.1f}%" if std is None else f"{100 * value:.1f} ± {100 * std:.1f}%"
    if "rmse" in key:
        return f"{value:.0f}" if std is None else f"{value:.0f} ± {std:.0f}"
    return str(value)


def markdown_table(header: list[str], lines: list[list[str]], right: set[int]) -> str:
    widths = [max([len(h), *(len(line[i]) for line in lines)]) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(
            cells, widths, strict=True))) + " |"  # fmt: skip

    rule = "|" + "|".join("-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines)]) + "\n"


def comparison_markdown(lines: list[dict[str, Any]]) -> str:
    """Ours beside the report's, row by row (`*` marks our best row by validation)."""
    if not lines:
        return ""
    metrics = [k for k in lines[0] if k.startswith("report_") and k != "report_par"]
    header = ["row", "par", "report par"]
    for key in metrics:
        name = key.removeprefix("report_")
        header += [name, "report"]
    header += ["status"]
    out = []
    for line in lines:
        cells = [line["name"] + (" *" if line["best"] else ""), str(line["par"]),
                 "-" if line["report_par"] is None else str(line["report_par"])]  # fmt: skip
        for key in metrics:
            name = key.removeprefix("report_")
            cells += [_fmt(name, line[name], line.get(f"{name}_std")), _fmt(name, line[key])]
        out.append([*cells, line["status"]])
    return markdown_table(header, out, right=set(range(1, len(header) - 1)))


# -- the test set, once, at the end ---------------------------------------------------------------


def chosen_rows(study: Study, table: dict[str, Any]) -> list[dict[str, Any]]:
    by_name = {r["name"]: r for r in table["rows"]}
    chosen = []
    for name in study.evaluate:
        row = next((r for r in table["rows"] if r["best"]), None) if name == "best" else by_name.get(name)
        if row is None:
            raise StudyError(f"evaluate: no row {name!r} in the table" if name != "best" else "evaluate: no best row")
        chosen.append(row)
    return chosen


def _test_evaluation(client: Client, experiment_id: str, name: str) -> dict[str, Any]:
    """The experiment's first test evaluation: the recorded one when the study ran before (the
    test set is looked at once per model), else a new one."""
    path = f"/experiments/{experiment_id}/evaluations"
    try:
        earlier = [e for e in client.transport.json("GET", path)["items"] if e["split"] == "test"]
        if earlier:
            return dict(earlier[0])
        return dict(client.transport.json("POST", path, json={"split": "test"}))
    except APIError as exc:
        raise StudyError(f"evaluate {name} ({experiment_id}): {exc}") from exc


def evaluate(client: Client, study: Study, table: dict[str, Any]) -> list[dict[str, Any]]:
    """Each chosen row's test metrics (every repeat evaluated; the mean when several), beside
    the report's test number. Only succeeded members have a model to evaluate."""
    results = []
    for row in chosen_rows(study, table):
        evaluations = []
        for experiment_id in row["experiment_ids"]:
            evaluations.append(_test_evaluation(client, experiment_id, row["name"]))
        keys = [k for k, v in evaluations[0]["metrics"].items() if isinstance(v, int | float) and k != "rows"]
        mean = {k: statistics.fmean(e["metrics"][k] for e in evaluations) for k in keys}
        published = study.report.get("rows", {}).get(row["name"], {}).get("test")
        results.append({"name": row["name"], "experiment_ids": row["experiment_ids"], "test": mean,
                        "report_test": published, "evaluations": evaluations})  # fmt: skip
    return results


def evaluations_markdown(results: list[dict[str, Any]], metric: str) -> str:
    if not results:
        return ""
    key = "accuracy" if "accuracy" in metric else "rmse"
    lines = []
    for r in results:
        ours = r["test"].get(key)
        lines.append([r["name"], _fmt(metric, ours), _fmt(metric, r["report_test"]),
                      ", ".join(f"{k} {v:.0f}" if abs(v) >= 1000 else f"{k} {v:.4g}"
                                for k, v in r["test"].items())])  # fmt: skip
    return markdown_table([f"row (test {key})", "ours", "report", "all test metrics"], lines, right={1, 2})


# -- the whole run --------------------------------------------------------------------------------


def run_study(
    client: Client | httpx.Client,
    path: Path,
    results_dir: Path,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    interval: float = 2.0,
) -> dict[str, Any]:
    """Submit, follow, tabulate, evaluate, write results; returns what was written to JSON."""
    service = as_client(client)
    study = load_study(path)
    sweep = follow(submit(service, study), on_progress, interval)
    table = read_table(sweep)
    lines = compare(study, table)
    tests = evaluate(service, study, table)
    metric = study.report.get("metric") or table.get("metric") or "val_accuracy"
    result = {"study": study.name, "sweep": sweep.data, "table": table, "comparison": lines, "test": tests}
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{study.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (results_dir / f"{study.name}.csv").write_text(read_table(sweep, "csv"))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sweep.data["counts"].items()))
    note = study.report.get("note")
    parts = [
        f"# {study.body.get('name', study.name)}: ours beside the report's\n",
        f"Sweep `{sweep.id}`: {sweep.data['size']} experiments ({counts}). Validation metrics of the weights "
        "each row serves (our table's `kept`: the last epoch, as the report, or the best); "
        "`*` marks our best row by validation.\n",
        *([f"Report: {note}\n"] if note else []),
        comparison_markdown(lines),
        "## Our table\n",
        read_table(sweep, "markdown"),
        *(["## Test set (evaluated once, after selection)\n", evaluations_markdown(tests, metric)] if tests else []),
    ]
    (results_dir / f"{study.name}.md").write_text("\n".join(parts))
    return result
