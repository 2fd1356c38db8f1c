"""The `labtrain` commands for datasets and trained models: datasets, upload, evaluate, download.
Exit codes as for every command: 0 ok, 1 the service refused (or could not be reached), 2 a
usage or local file error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.client import ApiKeyOption, LocalError, UrlOption, console, fail, service
from cli.commands import stdout
from cli.render import format_value


def datasets(
    as_json: Annotated[bool, typer.Option("--json", help="The service's JSON, for scripts.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List the built-in datasets and your uploads, with their task, inputs and targets."""
    with service(url, api_key) as client:
        items = [d.data for d in client.datasets()]
    if as_json:
        typer.echo(json.dumps({"items": items}, indent=2))
        return
    table = Table("name", "id", "task", "inputs", "targets", "rows", box=None)
    for d in items:
        rows = f"{d['n_samples']:,}"
        table.add_row(d["name"], d.get("id") or "-", d["task"], _inputs(d), _targets(d["targets"]), rows)
    stdout().print(table)


def _inputs(dataset: dict[str, Any]) -> str:
    shape = dataset["input_shape"]
    if len(shape) > 1:
        return "×".join(map(str, shape)) + " image"
    features = dataset["features"]
    shown = ", ".join(features[:4]) + (f", … ({len(features)})" if len(features) > 4 else "")
    return shown


def _targets(targets: dict[str, list[str] | None]) -> str:
    return ", ".join(f"{name} ({len(classes)} classes)" if classes else name for name, classes in targets.items())


def upload(
    file: Annotated[Path, typer.Argument(help="A CSV (numeric features and a target column) or an NPZ (x and y).")],
    target: Annotated[str | None, typer.Option(help="CSV: the column to predict (required for a CSV).")] = None,
    name: Annotated[str | None, typer.Option(help="The name a spec uses for it (default: the file's name).")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload a dataset; prints its id. A spec names it as `dataset: {id: ID}`."""
    if file.suffix.lower() == ".csv" and not target:
        raise fail(f"{file}: a CSV needs --target, the column to predict", 2)
    with service(url, api_key) as client:
        dataset = client.upload(file, target=target, name=name)
    data = dataset.data
    typer.echo(data["id"])
    console.print(
        f"dataset {data['id']} {data['name']!r}: {data['task']}, {data['n_samples']:,} rows, inputs {_inputs(data)}, "
        f"target {_targets(data['targets'])}"
    )
    console.print(f"use it in a spec: dataset: {{id: {data['id']}}}")


def evaluate(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="A succeeded experiment.")],
    split: Annotated[str, typer.Option(help="test (each look is counted) or val.")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="The service's JSON, for scripts.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Evaluate the model an experiment serves on its test (or val) split, in the dataset's units."""
    with service(url, api_key) as client:
        path = f"/experiments/{experiment_id}/evaluations"
        result = client.transport.json("POST", path, json={"split": split})
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table("metric", "value", box=None)
    for key, value in result["metrics"].items():
        table.add_row(key, format_value(key, value))
    stdout().print(table)
    if split == "test":
        console.print(f"{experiment_id}: test split evaluated {result['test_evaluations']} time(s)")


def download(
    experiment_id: Annotated[str, typer.Argument(metavar="ID", help="A succeeded experiment.")],
    out: Annotated[
        Path | None, typer.Option(help="A file, or a folder for ID.safetensors (default: ./ID.safetensors).")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Download the model an experiment serves (safetensors, with its spec and normalization); prints the path."""
    with service(url, api_key) as client:
        experiment = client.experiment(experiment_id)
        try:
            written = experiment.download(out)
        except OSError as exc:
            raise LocalError(f"cannot write {out or experiment_id + '.safetensors'}: {exc.strerror}") from exc
    typer.echo(str(written))


COMMANDS: list[Callable[..., None]] = [datasets, upload, evaluate, download]
