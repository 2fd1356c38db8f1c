"""The `labtrain` commands for datasets and models, and what every command shares, against the
real service (the `stack` fixture): upload, datasets, predict with the target column still in
the CSV, evaluate, download; the service's URL from LABTRAIN_HOST/LABTRAIN_PORT; --version; help
texts; CSV cells a spreadsheet would run; `study run` writing under the data directory."""

from __future__ import annotations

import csv
import io
import json
import re
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import yaml

import labtrain
from cli.commands import write_csv
from cli.main import app
from tests.cli.test_commands import labtrain as run
from tests.cli.test_commands import refused, runner
from tests.conftest import Stack
from tests.integration.test_experiments import tiny_spec

pytestmark = pytest.mark.integration

COMMANDS = ["up", "worker", "migrate", "submit", "watch", "list", "show", "metrics", "predict", "table", "plot",
            "cancel", "datasets", "upload", "evaluate", "download", "study", "study run"]  # fmt: skip


def test_version_and_help_texts() -> None:
    shown = runner.invoke(app, ["--version"])
    assert shown.exit_code == 0
    assert shown.stdout.strip() == f"labtrain {labtrain.__version__}"
    assert labtrain.__version__ == version("labtrain")
    for command in ["", *COMMANDS]:
        result = runner.invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, command
        text = result.stdout
        assert not re.search(r"<[a-z]", text), (command, text)  # no `<bool>`, `<str>`
        assert not re.search(r"\w \.", text), (command, text)  # no "Port ." (a `[default: ...]` eaten as markup)
    up = runner.invoke(app, ["up", "--help"], env={"COLUMNS": "200"}).stdout
    assert "Port to listen on (default: LABTRAIN_PORT, else 8000)." in up
    assert "--insecure" in up


@pytest.mark.timeout(60)
def test_the_url_comes_from_labtrain_host_and_port_as_up_reads_them(stack: Stack) -> None:
    for host in ("127.0.0.1", "0.0.0.0"):
        listed = run("", "list", LABTRAIN_URL=None, LABTRAIN_HOST=host, LABTRAIN_PORT=str(stack.port))
        assert listed.exit_code == 0, listed.stderr
    refused(run("", "list", LABTRAIN_URL=None, LABTRAIN_HOST="127.0.0.1", LABTRAIN_PORT="http"), 1, "LABTRAIN_PORT")


def quality_csv(n: int = 240) -> str:
    """Two features and a text target, `quality`, whose classes a spreadsheet would run as formulas."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 2))
    label = np.where(x[:, 0] + x[:, 1] > 0, "=good", "@bad")
    return "acidity,sugar,quality\n" + "".join(f"{a:.4f},{b:.4f},{t}\n" for (a, b), t in zip(x, label, strict=True))


@pytest.mark.timeout(150)
def test_upload_train_predict_with_the_target_column_evaluate_download(stack: Stack, tmp_path: Path) -> None:
    data = tmp_path / "wine.csv"
    data.write_text(quality_csv())
    refused(run(stack.base_url, "upload", str(data)), 2, "--target")
    name = f"wine-{tmp_path.name[-12:]}"
    uploaded = run(stack.base_url, "upload", str(data), "--target", "quality", "--name", name)
    assert uploaded.exit_code == 0, uploaded.stderr
    dataset_id = uploaded.stdout.strip()
    assert f"dataset {dataset_id} {name!r}: binary, 240 rows" in uploaded.stderr
    listed = run(stack.base_url, "datasets")
    assert listed.exit_code == 0, listed.stderr
    assert dataset_id in listed.stdout
    assert "spirals" in listed.stdout
    as_json = json.loads(run(stack.base_url, "datasets", "--json").stdout)
    (mine,) = [d for d in as_json["items"] if d.get("id") == dataset_id]
    assert (mine["features"], mine["targets"]) == (["acidity", "sugar"], {"quality": ["=good", "@bad"]})

    spec = tiny_spec("cli-wine", epochs=15, dataset={"id": dataset_id})
    experiment = stack.wait_terminal(stack.submit(spec)["id"], timeout=120)
    assert experiment["status"] == "succeeded", experiment["error"]

    rows = tmp_path / "rows.csv"
    rows.write_text("".join(quality_csv().splitlines(keepends=True)[:6]))  # the header and 5 rows, quality too
    out = tmp_path / "predicted.csv"
    predicted = run(stack.base_url, "predict", experiment["id"], str(rows), "--out", str(out))
    assert predicted.exit_code == 0, predicted.stderr
    assert "'quality': the dataset's target, not sent to the model" in predicted.stderr
    assert predicted.stdout.splitlines()[0].split() == ["#", "acidity", "sugar", "quality", "label", "p(label)"]
    inputs = [{"acidity": float(r["acidity"]), "sugar": float(r["sugar"])} for r in csv.DictReader(rows.open())]
    want = stack.client.post(f"/experiments/{experiment['id']}/predictions", json={"inputs": inputs}).json()
    written = list(csv.reader(io.StringIO(out.read_text())))
    assert written[0] == ["acidity", "sugar", "quality", "label", "p_0", "p_1"]
    # Text a spreadsheet would run (`=good`, `@bad`) is written as text; numbers (-0.42) as they are.
    assert [r[3] for r in written[1:]] == ["'" + p["label"] for p in want["predictions"]]
    assert {r[2] for r in written[1:]} <= {"'=good", "'@bad"}
    assert [float(r[0]) for r in written[1:]] == [r["acidity"] for r in inputs]

    evaluated = run(stack.base_url, "evaluate", experiment["id"])
    assert evaluated.exit_code == 0, evaluated.stderr
    assert "accuracy" in evaluated.stdout
    assert "test split evaluated 1 time(s)" in evaluated.stderr
    val = json.loads(run(stack.base_url, "evaluate", experiment["id"], "--split", "val", "--json").stdout)
    assert val["split"] == "val"
    assert stack.experiment(experiment["id"])["test_evaluations"] == 1
    refused(run(stack.base_url, "evaluate", experiment["id"], "--split", "train"), 1, "ValidationError", "split")

    downloaded = run(stack.base_url, "download", experiment["id"], "--out", str(tmp_path))
    assert downloaded.exit_code == 0, downloaded.stderr
    model = Path(downloaded.stdout.strip())
    assert model == tmp_path / f"{experiment['id']}.safetensors"
    assert model.read_bytes() == stack.client.get(f"/experiments/{experiment['id']}/model").content
    refused(run(stack.base_url, "download", "no-such-id"), 1, "ExperimentNotFound")
    nowhere = str(tmp_path / "no" / "such.safetensors")
    refused(run(stack.base_url, "download", experiment["id"], "--out", nowhere), 2, "cannot write")


def test_csv_output_never_holds_a_formula(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    write_csv(out, [{"name": '=HYPERLINK("x")', "value": -0.5, "text": "-2", "note": "+cmd", "at": "@SUM(A1)"}])
    assert out.read_text().splitlines()[1] == '"\'=HYPERLINK(""x"")",-0.5,-2,\'+cmd,\'@SUM(A1)'


@pytest.mark.timeout(150)
def test_study_run_writes_under_the_data_directory_unless_told(stack: Stack, tmp_path: Path) -> None:
    study = {
        "name": "mini-cli",
        "base": tiny_spec("row", epochs=4),
        "variants": [{"name": "narrow", "model.neurons": 4}, {"name": "wide", "model.neurons": 16}],
        "report": {"metric": "val_accuracy", "rows": {"narrow": {"par": 37, "val": 0.6}}},
        "evaluate": {"rows": ["best"]},
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(study))
    data_dir = tmp_path / "data"
    result = run(stack.base_url, "study", "run", str(path), LABTRAIN_DATA_DIR=str(data_dir))
    assert result.exit_code == 0, result.stderr
    assert "| narrow" in result.stdout
    written = sorted(p.name for p in (data_dir / "studies").iterdir())
    assert written == ["mini.csv", "mini.json", "mini.md"]
    assert not (tmp_path / "results").exists()  # nothing beside the study file
    chosen = tmp_path / "chosen"
    again = run(stack.base_url, "study", "run", str(path), "--out", str(chosen))
    assert again.exit_code == 0, again.stderr
    assert (chosen / "mini.md").read_text() == (data_dir / "studies" / "mini.md").read_text()
