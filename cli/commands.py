"""The `labtrain` commands that talk to a running service over HTTP: submit, watch, list, show,
metrics, predict, table, plot, cancel. Exit codes: 0 ok, 1 the service refused (or could not be
reached, or the run watched did not succeed), 2 a usage or local file error, 130 Ctrl-C."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.client import ApiKeyOption, LocalError, UrlOption, service
from cli.render import (
    experiment_table,
    follow_experiment,
    follow_sweep,
    format_value,
    metric_summary,
    sweep_table,
)
from labtrain import Experiment, NotFound, flatten_prediction
from labtrain.client import read_spec_file
from ml.cells import csv_cell

console = Console(stderr=True, highlight=False, soft_wrap=True)


def stdout() -> Console:
    """A console on stdout, made per command so COLUMNS and redirections of this run apply. Piped
    into a file or another program, tables get room (160 columns) rather than Rich's 80."""
    out = Console(highlight=False)
    if not out.is_terminal:
        out.width = max(out.width, 160)
    return out


def read_spec(file: Path) -> dict[str, Any]:
    """A spec or sweep file: JSON (.json) or YAML (.yaml, .yml), a mapping; not a study file."""
    body = read_spec_file(file)
    if "report" in body or "evaluate" in body:
        raise LocalError(f"{file} is a study file (it has report/evaluate): run it with `labtrain study run {file}`")
    return body


def read_inputs(file: Path) -> tuple[list[str], list[Any]]:
    """Prediction inputs and the names of their columns. CSV: a header row of feature names (rows
    are sent as objects keyed by name) or numbers only (rows sent in feature order). JSON: a list
    of rows, or `{"inputs": [...]}`; an image row is a nested list and has no columns shown."""
    text = _read(file, (".csv", ".json"))
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise LocalError(f"{file}: not valid JSON: {exc}") from exc
        rows = data.get("inputs") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not rows:
            raise LocalError(f'{file}: expected a non-empty list of rows, or {{"inputs": [...]}}')
        if all(isinstance(r, dict) for r in rows):
            return list(dict.fromkeys(k for r in rows for k in r)), rows
        width = len(rows[0]) if isinstance(rows[0], list) else 0
        flat = all(isinstance(r, list) and not any(isinstance(v, list) for v in r) for r in rows)
        return ([f"x[{i}]" for i in range(width)] if flat else []), rows
    lines = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not lines:
        raise LocalError(f"{file}: no rows")
    if all(_is_number(c) for c in lines[0]):
        return [f"x[{i}]" for i in range(len(lines[0]))], [[_number(c) for c in r] for r in lines]
    header = [h.strip() for h in lines[0]]
    if len(lines) == 1:
        raise LocalError(f"{file}: a header row ({', '.join(header)}) and no rows")
    return header, [{h: _number(c) for h, c in zip(header, r, strict=False)} for r in lines[1:]]


def _read(file: Path, suffixes: tuple[str, ...]) -> str:
    if file.suffix.lower() not in suffixes:
        raise LocalError(f"{file}: expected a {', '.join(suffixes)} file")
    try:
        return file.read_text()
    except OSError as exc:
        raise LocalError(f"cannot read {file}: {exc.strerror}") from exc


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _number(cell: str) -> Any:
    """A number when the cell is one; otherwise the text, for the service to name what is wrong."""
    return float(cell) if _is_number(cell) else cell.strip()


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV; a text cell a spreadsheet would run as a formula is written as text."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in columns])
    writer.writerows([csv_cell(row.get(c)) for c in columns] for row in rows)
    try:
        path.write_text(buffer.getvalue())
    except OSError as exc:
        raise LocalError(f"cannot write {path}: {exc.strerror}") from exc


def submit(
    file: Annotated[Path, typer.Argument(help="An experiment spec (.json, .yaml), or a sweep (a file with `base`).")],
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow it to the end with a progress bar.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Submit a spec file: POST /experiments, or POST /sweeps when the file has `base`. Prints the id."""
    with service(url, api_key) as client:
        body = read_spec(file)
        if "base" in body:
            sweep = client.submit_sweep(body).data
            typer.echo(sweep["id"])
            console.print(f"sweep {sweep['id']} {sweep['name']!r}: {sweep['size']} experiments queued")
            if watch:
                raise typer.Exit(follow_sweep(client, sweep["id"], console, stdout()))
            console.print(f"follow it: labtrain table {sweep['id']}")
            return
        experiment = client.submit(body).data
        typer.echo(experiment["id"])
        console.print(
            f"experiment {experiment['id']} {experiment['name']!r}: {experiment['param_count']:,} parameters, "
            f"{experiment['status']}"
        )
        if watch:
            raise typer.Exit(follow_experiment(client, experiment["id"], console, stdout()))
        console.print(f"follow it: labtrain watch {experiment['id']}")


def watch(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="The experiment.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Follow an experiment live (epoch, loss, validation metric, time left); Ctrl-C leaves it running."""
    with service(url, api_key) as client:
        raise typer.Exit(follow_experiment(client, experiment_id, console, stdout()))


def list_experiments(
    status: Annotated[str | None, typer.Option(help="Only this status (queued, running, succeeded, ...).")] = None,
    sweep: Annotated[str | None, typer.Option(help="Only the members of this sweep.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="Only those carrying this tag, or their sweep (repeat it: all of them).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first (the service allows 1 to 200).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="The service's JSON page, for scripts.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List experiments, newest first."""
    params: dict[str, Any] = {"limit": limit}
    params |= {"status": status} if status else {}
    params |= {"sweep_id": sweep} if sweep else {}
    params |= {"tag": tag} if tag else {}
    with service(url, api_key) as client:
        page = client.transport.json("GET", "/experiments", params=params)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    table = Table(box=None)
    for column in ("id", "name", "status", "params", "epochs", "best validation", "tags", "created"):
        table.add_column(column, no_wrap=column in ("id", "status", "created"), justify="right" if column in (
            "params", "epochs") else "left")  # fmt: skip
    for e in page["items"]:
        best = e["metrics"]["best"] or {}
        table.add_row(
            e["id"], e["name"], e["status"], f"{e['param_count']:,}", f"{e['epochs_done']}/{e['spec']['epochs']}",
            metric_summary({k: v for k, v in best.items() if k != "epoch"}), escape(",".join(e.get("tags") or [])),
            e["created_at"][:16].replace("T", " "),
        )  # fmt: skip
    stdout().print(table)
    if page["next_cursor"]:
        console.print(f"(the newest {len(page['items'])}; --limit for more)")


def show(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="The experiment.")],
    as_json: Annotated[bool, typer.Option("--json", help="The service's JSON, for scripts.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show an experiment: status, progress, metrics, timings and its spec with every default."""
    with service(url, api_key) as client:
        experiment = client.experiment(experiment_id).data
    if as_json:
        typer.echo(json.dumps(experiment, indent=2))
        return
    out = stdout()
    out.print(experiment_table(experiment))
    out.print("spec:", json.dumps(experiment["spec"], separators=(", ", ": ")), soft_wrap=True)


def metrics(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="The experiment.")],
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row, as the service writes it.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Print the metrics of every finished epoch."""
    with service(url, api_key) as client:
        if as_csv:
            path = f"/experiments/{experiment_id}/metrics"
            typer.echo(client.transport.request("GET", path, params={"format": "csv"}).text, nl=False)
            return
        epochs = client.transport.json("GET", f"/experiments/{experiment_id}/metrics")["epochs"]
    if not epochs:
        console.print(f"{experiment_id} has no finished epoch yet")
        return
    columns = list(epochs[0])
    table = Table(*columns, box=None)
    for row in epochs:
        table.add_row(*(format_value(c, row.get(c)) for c in columns))
    stdout().print(table)


def predict(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="A succeeded experiment.")],
    file: Annotated[
        Path,
        typer.Argument(help="Inputs: CSV (a header row of feature names, or numbers only) or JSON (a list of rows)."),
    ],
    out: Annotated[Path | None, typer.Option(help="Also write the inputs and predictions as CSV here.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Predict with a trained model: a table of the inputs and their predictions, in the dataset's units.

    A column that is the dataset's target is not sent to the model; it is shown beside the predictions."""
    with service(url, api_key) as client:
        columns, inputs = read_inputs(file)
        experiment = client.experiment(experiment_id)
        predictions = experiment.predictions(_without_target(experiment, columns, inputs))
        if out is not None:
            rows = [{**dict(zip(columns, _cells(row), strict=False)), **flatten_prediction(p, full=True)}
                    for row, p in zip(inputs, predictions, strict=True)]  # fmt: skip
            write_csv(out, rows)
    flat = [flatten_prediction(p, full=False) for p in predictions]
    keys = list(dict.fromkeys(k for row in flat for k in row))
    table = Table("#", *columns, *keys, box=None)
    for i, (row, p) in enumerate(zip(inputs, flat, strict=True)):
        table.add_row(str(i), *(format_value(c, v) for c, v in zip(columns, _cells(row), strict=False)),
                      *(format_value(k, p.get(k)) for k in keys))  # fmt: skip
    stdout().print(table)
    if out is not None:
        console.print(f"wrote {len(predictions)} predictions to {out}")


def _without_target(experiment: Experiment, columns: list[str], inputs: list[Any]) -> list[Any]:
    """Rows keyed by name without the dataset's target column(s), saying so when there were any."""
    if not inputs or not isinstance(inputs[0], dict):
        return inputs
    try:
        targets = [c for c in experiment.target_columns() if c in columns]
    except NotFound:  # an upload deleted since: its model still answers, the rows go as they are
        return inputs
    if not targets:
        return inputs
    names = ", ".join(repr(t) for t in targets)
    console.print(f"{names}: the dataset's target, not sent to the model (shown beside the predictions)")
    return [{k: v for k, v in row.items() if k not in targets} for row in inputs]


def _cells(row: Any) -> list[Any]:
    """A tabular row's values in column order (an image row has none shown)."""
    if isinstance(row, dict):
        return list(row.values())
    if isinstance(row, list) and all(not isinstance(v, list) for v in row):
        return row
    return []


def table(
    sweep_id: Annotated[str, typer.Argument(metavar="SWEEP_ID", help="The sweep.")],
    format: Annotated[  # noqa: A002
        str, typer.Option("--format", "-f", help="table (default), csv, markdown or json.")
    ] = "table",
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Print a sweep's study table; `*` marks the best row by validation."""
    if format not in ("table", "csv", "markdown", "json"):
        console.print(f"[bold red]error[/]: --format {format!r}: expected table, csv, markdown or json")
        raise typer.Exit(2)
    with service(url, api_key) as client:
        if format in ("csv", "markdown"):
            typer.echo(client.transport.request("GET", f"/sweeps/{sweep_id}/table", params={"format": format}).text,
                       nl=False)  # fmt: skip
            return
        data = client.transport.json("GET", f"/sweeps/{sweep_id}/table")
    if format == "json":
        typer.echo(json.dumps(data, indent=2))
        return
    stdout().print(sweep_table(data))


def plot(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="An experiment (a sweep for `compare`).")],
    kind: Annotated[
        str, typer.Argument(help="learning-curves, decision-boundary, sigma, confusion; compare for a sweep.")
    ],
    out: Annotated[Path | None, typer.Option(help="Where to write the PNG (default: ID-KIND.png).")] = None,
    feature: Annotated[str | None, typer.Option(help="sigma: the feature on the x axis.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Write a plot of an experiment (or a sweep's comparison) as a PNG file."""
    path = f"/sweeps/{experiment_id}/plots/compare.png" if kind == "compare" else (
        f"/experiments/{experiment_id}/plots/{kind}.png")  # fmt: skip
    target = out or Path(f"{experiment_id}-{kind}.png")
    with service(url, api_key) as client:
        png = client.transport.request("GET", path, params={"feature": feature} if feature else None).content
        if not png.startswith(b"\x89PNG"):
            raise LocalError(f"GET {path} did not answer a PNG")
        try:
            target.write_bytes(png)
        except OSError as exc:
            raise LocalError(f"cannot write {target}: {exc.strerror}") from exc
    typer.echo(str(target))


def cancel(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="The experiment (or sweep, with --sweep).")],
    sweep: Annotated[bool, typer.Option("--sweep", help="ID is a sweep: cancel every member not ended.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Cancel an experiment (at once if queued, at the next epoch boundary if running) or a sweep."""
    with service(url, api_key) as client:
        if sweep:
            answer = client.transport.json("POST", f"/sweeps/{experiment_id}/cancel")
            counts = ", ".join(f"{n} {s}" for s, n in answer["counts"].items())
            console.print(f"sweep {experiment_id} {answer['status']}: {counts}")
            return
        answer = client.transport.json("POST", f"/experiments/{experiment_id}/cancel")
    note = " (it stops at the next epoch boundary)" if answer["status"] == "running" else ""
    console.print(f"experiment {experiment_id} {answer['status']}, cancel requested{note}")


COMMANDS = [submit, watch, (list_experiments, "list"), show, metrics, predict, table, plot, cancel]


def register(app: typer.Typer) -> None:
    """Add these commands to the `labtrain` app."""
    for entry in COMMANDS:
        function, name = entry if isinstance(entry, tuple) else (entry, None)
        app.command(name)(function)
