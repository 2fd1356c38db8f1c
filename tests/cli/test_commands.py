"""The `labtrain` client commands against the real service (the `stack` fixture: the API over
HTTP, two Celery workers, Redis, SQLite and PostgreSQL): submit, watch, list, show, metrics,
predict, table, plot, cancel, their refusals (one line, exit 1 from the service, 2 for a local
problem), and the API key. Most run in-process through Typer's CliRunner; `watch`, Ctrl-C and
the new user's session run the installed `labtrain` as a subprocess."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from cli.main import app
from tests.conftest import Stack, free_port, wait_for
from tests.integration.test_auth import keyed_api  # noqa: F401 (a fixture: a second API with two owners' keys)
from tests.integration.test_experiments import parked_spec, tiny_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def labtrain(url: str, *args: str, **env: str | None) -> Result:
    """`labtrain ARGS` in-process, with LABTRAIN_URL set; an unexpected exception fails the test."""
    environment: dict[str, str | None] = {"LABTRAIN_URL": url, "LABTRAIN_API_KEY": None, "COLUMNS": "200"} | env
    result = runner.invoke(app, list(args), env=environment)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def refused(result: Result, code: int, *expected: str) -> str:
    """The command failed with `code` and said so in one line: `error: ...` naming each of `expected`."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False))
    return path


def subprocess_env(stack: Stack) -> dict[str, str]:
    return {k: v for k, v in stack.env.items() if not k.startswith("LABTRAIN_")} | {"LABTRAIN_URL": stack.base_url}


LABTRAIN = [str(Path(sys.executable).with_name("labtrain"))]


# -- submit, show, list, metrics -------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_submit_a_spec_file_then_show_list_and_metrics(stack: Stack, tmp_path: Path) -> None:
    yaml_file = write(tmp_path / "tiny.yaml", tiny_spec("cli-yaml", epochs=12))
    submitted = labtrain(stack.base_url, "submit", str(yaml_file))
    assert submitted.exit_code == 0, submitted.stderr
    experiment_id = submitted.stdout.strip()  # only the id on stdout: ID=$(labtrain submit f.yaml)
    assert stack.experiment(experiment_id)["name"] == "cli-yaml"
    assert f"labtrain watch {experiment_id}" in submitted.stderr
    json_file = write(tmp_path / "tiny.json", tiny_spec("cli-json", epochs=3))
    other_id = labtrain(stack.base_url, "submit", str(json_file)).stdout.strip()
    assert stack.experiment(other_id)["spec"]["epochs"] == 3
    done = stack.wait_terminal(experiment_id)
    assert done["status"] == "succeeded"
    stack.wait_terminal(other_id)

    shown = labtrain(stack.base_url, "show", experiment_id)
    assert shown.exit_code == 0
    for text in (experiment_id, "cli-yaml", "succeeded", f"{done['param_count']:,}", "12/12", "val_accuracy"):
        assert text in shown.stdout, text
    as_json = json.loads(labtrain(stack.base_url, "show", experiment_id, "--json").stdout)
    assert as_json == stack.experiment(experiment_id)

    listed = labtrain(stack.base_url, "list", "--limit", "200")
    assert listed.exit_code == 0
    assert experiment_id in listed.stdout
    assert other_id in listed.stdout
    page = json.loads(labtrain(stack.base_url, "list", "--json", "--status", "succeeded", "--limit", "200").stdout)
    assert {experiment_id, other_id} <= {e["id"] for e in page["items"]}
    assert {e["status"] for e in page["items"]} == {"succeeded"}

    table = labtrain(stack.base_url, "metrics", experiment_id)
    assert table.exit_code == 0
    lines = table.stdout.strip().splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "val_loss", "val_accuracy", "seconds"]
    assert [line.split()[0] for line in lines[1:]] == [str(n) for n in range(1, 13)]
    as_csv = labtrain(stack.base_url, "metrics", experiment_id, "--csv")
    assert as_csv.stdout == stack.client.get(f"/experiments/{experiment_id}/metrics?format=csv").text


@pytest.mark.timeout(60)
def test_refusals_are_one_readable_line_with_their_exit_code(stack: Stack, tmp_path: Path) -> None:
    before = len(stack.client.get("/experiments", params={"limit": 200}).json()["items"])
    bad = write(tmp_path / "bad.yaml", tiny_spec("bad", model={"type": "mlp", "neurons": 0}, loss="hinge"))
    line = refused(labtrain(stack.base_url, "submit", str(bad)), 1, "error: ValidationError: ")
    assert "model.neurons: " in line  # the field path as the user wrote it (no `body.` prefix)
    assert "loss: " in line
    assert len(stack.client.get("/experiments", params={"limit": 200}).json()["items"]) == before

    refused(labtrain(stack.base_url, "submit", str(tmp_path / "missing.yaml")), 2, "cannot read", "missing.yaml")
    refused(labtrain(stack.base_url, "submit", str(write(tmp_path / "spec.txt", {}))), 2, "expected a .json")
    (tmp_path / "broken.yaml").write_text("dataset: {name: spirals\nmodel: [")
    refused(labtrain(stack.base_url, "submit", str(tmp_path / "broken.yaml")), 2, "not valid YAML")
    (tmp_path / "list.json").write_text("[1, 2]")
    refused(labtrain(stack.base_url, "submit", str(tmp_path / "list.json")), 2, "a spec is a mapping")
    study = ROOT / "studies" / "exercise1.yaml"
    refused(labtrain(stack.base_url, "submit", str(study)), 2, "study file", f"labtrain study run {study}")

    refused(labtrain(stack.base_url, "show", "no-such-id"), 1, "error: ExperimentNotFound: ", "no-such-id")
    refused(labtrain(stack.base_url, "watch", "no-such-id"), 1, "error: ExperimentNotFound: ")
    refused(labtrain(stack.base_url, "metrics", "no-such-id"), 1, "error: ExperimentNotFound: ")
    refused(labtrain(stack.base_url, "list", "--limit", "500"), 1, "error: ValidationError: ", "limit")
    refused(labtrain(stack.base_url, "list", "--status", "sleeping"), 1, "error: ValidationError: ", "status")
    refused(labtrain(stack.base_url, "table", "no-such-sweep"), 1, "error: SweepNotFound: ")
    refused(labtrain(stack.base_url, "table", "x", "--format", "html"), 2, "--format 'html'")

    dead = f"http://127.0.0.1:{free_port()}"
    expected = f"error: cannot reach the service at {dead} (is `labtrain up` running?)"
    for args in (["list"], ["show", "x"], ["submit", str(write(tmp_path / "ok.json", tiny_spec("ok")))]):
        assert refused(labtrain(dead, *args), 1) == expected
    assert refused(labtrain(stack.base_url, "list", "--url", dead), 1) == expected  # --url beats LABTRAIN_URL
    study_run = labtrain(dead, "study", "run", str(study), "--out", str(tmp_path / "results"))
    assert refused(study_run, 1) == expected


@pytest.mark.timeout(60)
def test_show_and_watch_say_how_many_are_queued_ahead(stack: Stack) -> None:
    first, second = (stack.submit(parked_spec(f"cli-queued-{i}")) for i in range(2))
    ahead = stack.experiment(second["id"])["queue_position"]
    assert ahead == stack.experiment(first["id"])["queue_position"] + 1
    shown = labtrain(stack.base_url, "show", second["id"])
    assert shown.exit_code == 0, shown.stderr
    assert f"queued, {ahead} ahead on the gpu queue" in shown.stdout
    watching = subprocess.Popen([*LABTRAIN, "watch", second["id"]], env=subprocess_env(stack),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert watching.stderr is not None
        first_line = watching.stderr.readline()  # watch has read the experiment: it is still queued
    finally:
        for e in (first, second):
            stack.client.post(f"/experiments/{e['id']}/cancel")
    watching.communicate(timeout=60)
    assert first_line.strip() == f"status queued, {ahead} ahead on the gpu queue"


def test_cancel_an_experiment_and_a_sweep(stack: Stack) -> None:
    parked = stack.submit(parked_spec("cli-cancel"))
    cancelled = labtrain(stack.base_url, "cancel", parked["id"])
    assert cancelled.exit_code == 0, cancelled.stderr
    assert "cancelled" in cancelled.stderr
    assert stack.experiment(parked["id"])["status"] == "cancelled"
    refused(labtrain(stack.base_url, "cancel", parked["id"]), 1, "error: ExperimentFinished: ")
    refused(labtrain(stack.base_url, "cancel", "no-such-id"), 1, "error: ExperimentNotFound: ")

    sweep = stack.client.post("/sweeps", json={"name": "cli-cancel", "base": parked_spec("row"),
                                               "variants": [{"name": "a"}, {"name": "b"}]}).json()  # fmt: skip
    result = labtrain(stack.base_url, "cancel", "--sweep", sweep["id"])
    assert result.exit_code == 0, result.stderr
    assert "2 cancelled" in result.stderr
    assert stack.client.get(f"/sweeps/{sweep['id']}").json()["status"] == "cancelled"


# -- predict -----------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_predict_from_csv_and_json_prints_a_table_and_writes_csv(stack: Stack, tmp_path: Path) -> None:
    experiment = stack.wait_terminal(stack.submit(tiny_spec("cli-predict", epochs=10))["id"])
    assert experiment["status"] == "succeeded"
    rows = [[0.5, -0.25], [-1.0, 1.0], [0.0, 0.0]]
    expected = stack.client.post(f"/experiments/{experiment['id']}/predictions", json={"inputs": rows}).json()
    expected_rows = expected["predictions"]

    (tmp_path / "in.csv").write_text("x1,x2\n" + "".join(f"{a},{b}\n" for a, b in rows))
    out = tmp_path / "out.csv"
    result = labtrain(stack.base_url, "predict", experiment["id"], str(tmp_path / "in.csv"), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["#", "x1", "x2", "label", "p(label)"]
    for line, want in zip(lines[1:], expected_rows, strict=True):
        assert int(line.split()[3]) == want["label"]
        assert float(line.split()[4]) == pytest.approx(want["probabilities"][want["label"]], abs=1e-3)
    written = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(written[0]) == ["x1", "x2", "label", "p_0", "p_1"]
    for got, want, row in zip(written, expected_rows, rows, strict=True):
        assert [float(got["x1"]), float(got["x2"])] == row
        assert int(got["label"]) == want["label"]
        assert [float(got["p_0"]), float(got["p_1"])] == pytest.approx(want["probabilities"])

    write(tmp_path / "in.json", {"inputs": rows})
    from_json = labtrain(stack.base_url, "predict", experiment["id"], str(tmp_path / "in.json"))
    assert from_json.exit_code == 0, from_json.stderr
    assert [int(line.split()[3]) for line in from_json.stdout.strip().splitlines()[1:]] == [
        p["label"] for p in expected_rows
    ]

    (tmp_path / "short.csv").write_text("x1\n0.5\n")
    line = refused(labtrain(stack.base_url, "predict", experiment["id"], str(tmp_path / "short.csv")), 1)
    assert line.startswith("error: ValidationError: inputs.0")  # the row that does not fit
    assert "x2" in line
    (tmp_path / "text.csv").write_text("x1,x2\n0.5,abc\n")
    refused(labtrain(stack.base_url, "predict", experiment["id"], str(tmp_path / "text.csv")), 1, "inputs.0")
    parked = stack.submit(parked_spec("cli-not-trained"))
    refused(labtrain(stack.base_url, "predict", parked["id"], str(tmp_path / "in.csv")), 1, "ExperimentNotFinished")
    stack.client.post(f"/experiments/{parked['id']}/cancel")
    (tmp_path / "empty.csv").write_text("")
    refused(labtrain(stack.base_url, "predict", experiment["id"], str(tmp_path / "empty.csv")), 2, "no rows")
    refused(labtrain(stack.base_url, "predict", experiment["id"], str(tmp_path / "in.npz")), 2, "expected a .csv")


# -- sweeps ------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_submit_a_sweep_file_with_watch_then_print_its_table(stack: Stack, tmp_path: Path) -> None:
    body = {"name": "cli-sweep", "base": tiny_spec("row", epochs=6),
            "variants": [{"name": "narrow", "model.neurons": 4}, {"name": "wide", "model.neurons": 16}]}  # fmt: skip
    result = labtrain(stack.base_url, "submit", str(write(tmp_path / "sweep.yaml", body)), "--watch")
    assert result.exit_code == 0, result.stderr
    sweep_id = result.stdout.splitlines()[0].strip()
    sweep = stack.client.get(f"/sweeps/{sweep_id}").json()
    assert sweep["status"] == "finished"
    assert sweep["counts"] == {"succeeded": 2}
    assert "2 succeeded" in result.stderr
    api_table = stack.client.get(f"/sweeps/{sweep_id}/table").json()
    best = next(r["name"] for r in api_table["rows"] if r["best"])
    assert f"{best} *" in result.stdout  # the table printed at the end marks the best row

    shown = labtrain(stack.base_url, "table", sweep_id)
    assert shown.exit_code == 0
    names = [line.split()[0] for line in shown.stdout.strip().splitlines()[2:]]
    assert names == ["narrow", "wide"]
    assert "val_accuracy" in shown.stdout
    for fmt in ("csv", "markdown"):
        text = stack.client.get(f"/sweeps/{sweep_id}/table", params={"format": fmt}).text
        assert labtrain(stack.base_url, "table", sweep_id, "-f", fmt).stdout == text
    assert json.loads(labtrain(stack.base_url, "table", sweep_id, "-f", "json").stdout) == api_table

    members = json.loads(labtrain(stack.base_url, "list", "--sweep", sweep_id, "--json").stdout)["items"]
    assert sorted(e["id"] for e in members) == sorted(sweep["experiment_ids"])


# -- the API key -------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_api_key_from_the_option_or_the_environment(keyed_api: httpx.Client, tmp_path: Path) -> None:  # noqa: F811
    url = str(keyed_api.base_url).rstrip("/")
    refused(labtrain(url, "list"), 1, "error: Unauthorized: ", "API key")
    spec = write(tmp_path / "parked.json", parked_spec("alice's"))
    submitted = labtrain(url, "submit", str(spec), "--api-key", "key-a")
    assert submitted.exit_code == 0, submitted.stderr
    experiment_id = submitted.stdout.strip()
    assert experiment_id in labtrain(url, "list", LABTRAIN_API_KEY="key-a").stdout
    assert experiment_id not in labtrain(url, "list", LABTRAIN_API_KEY="key-b").stdout
    refused(labtrain(url, "show", experiment_id, LABTRAIN_API_KEY="key-b"), 1, "error: ExperimentNotFound: ")
    assert labtrain(url, "cancel", experiment_id, "--api-key", "key-a").exit_code == 0


@pytest.mark.timeout(90)
def test_plot_kinds_and_refusals(stack: Stack, tmp_path: Path) -> None:
    experiment = stack.wait_terminal(stack.submit(tiny_spec("cli-plot", epochs=5))["id"])
    for kind in ("learning-curves", "decision-boundary", "confusion"):
        out = tmp_path / f"{kind}.png"
        result = labtrain(stack.base_url, "plot", experiment["id"], kind, "--out", str(out))
        assert result.exit_code == 0, result.stderr
        assert out.read_bytes().startswith(b"\x89PNG")
    refused(labtrain(stack.base_url, "plot", experiment["id"], "pie-chart", "--out", str(tmp_path / "x.png")), 1)
    refused(labtrain(stack.base_url, "plot", "no-such-id", "learning-curves"), 1, "ExperimentNotFound")
    assert not (tmp_path / "x.png").exists()

    body = {
        "name": "cli-plot",
        "base": tiny_spec("row", epochs=3),
        "variants": [{"name": "a"}, {"name": "b", "seed": 1}],
    }
    sweep = stack.client.post("/sweeps", json=body).json()
    wait_for(lambda: stack.client.get(f"/sweeps/{sweep['id']}").json()["status"] == "finished", 60, what="the sweep")
    out = tmp_path / "compare.png"
    result = labtrain(stack.base_url, "plot", sweep["id"], "compare", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
