"""Sweeps through the real API: submitted, validated row by row, trained by real Celery workers,
followed, cancelled, and tabulated, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cli.study import run_study
from tests.conftest import Stack, wait_for
from tests.integration.test_auth import keyed_api  # noqa: F401 (a fixture: a second API with two owners' keys)

pytestmark = pytest.mark.integration


def base_spec(epochs: int = 15, **overrides: Any) -> dict[str, Any]:
    """A spirals MLP that trains in well under a second."""
    spec: dict[str, Any] = {
        "dataset": {"name": "spirals", "params": {"n_samples": 600, "noise": 0.1}, "seed": 0},
        "model": {"type": "mlp", "hidden_layers": 2, "neurons": 8, "activation": "relu"},
        "loss": "bce",
        "optimizer": {"name": "adam", "lr": 0.01},
        "batch_size": 64,
        "epochs": epochs,
        "seed": 0,
    }
    spec.update(overrides)
    return spec


def post_sweep(stack: Stack, body: dict[str, Any], expected: int = 202, **headers: str) -> dict[str, Any]:
    response = stack.client.post("/sweeps", json=body, headers=headers)
    assert response.status_code == expected, response.text
    return response.json()


def read_sweep(stack: Stack, sweep_id: str) -> dict[str, Any]:
    response = stack.client.get(f"/sweeps/{sweep_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_sweep(stack: Stack, sweep_id: str, status: str = "finished", timeout: float = 60.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        sweep = read_sweep(stack, sweep_id)
        return sweep if sweep["status"] == status and not {"queued", "running"} & set(sweep["counts"]) else None

    return wait_for(done, timeout, interval=0.1, what=f"sweep {sweep_id} to be {status}")


def all_experiment_ids(stack: Stack) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        body = stack.client.get("/experiments", params=params).json()
        ids += [e["id"] for e in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


def table(stack: Stack, sweep_id: str, fmt: str = "json") -> Any:
    response = stack.client.get(f"/sweeps/{sweep_id}/table", params={"format": fmt})
    assert response.status_code == 200, response.text
    return response.json() if fmt == "json" else response.text


@pytest.mark.timeout(90)
def test_sweep_of_variants_runs_to_finished_with_counts(stack: Stack) -> None:
    sweep = post_sweep(stack, {
        "name": "three",
        "base": base_spec(),
        "variants": [
            {"name": "narrow"},
            {"name": "wide", "model.neurons": 32},
            {"name": "sgd", "optimizer.name": "sgd", "optimizer.lr": 0.1, "dataset.params.noise": 0.2},
        ],
    })  # fmt: skip
    assert sweep["name"] == "three"
    assert sweep["status"] == "running"
    assert sum(sweep["counts"].values()) == 3
    assert set(sweep["counts"]) <= {"queued", "running", "succeeded"}
    assert [m["name"] for m in sweep["members"]] == ["narrow", "wide", "sgd"]
    ids = sweep["experiment_ids"]
    assert len(set(ids)) == 3

    members = {m["name"]: stack.experiment(m["experiment_id"]) for m in sweep["members"]}
    assert all(e["sweep_id"] == sweep["id"] for e in members.values())
    assert members["narrow"]["param_count"] == 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1
    assert members["wide"]["param_count"] == 2 * 32 + 32 + 32 * 32 + 32 + 32 + 1
    assert members["wide"]["spec"]["model"]["neurons"] == 32
    assert members["sgd"]["spec"]["optimizer"] | {"momentum": None} == {
        "name": "sgd", "lr": 0.1, "momentum": None, "weight_decay": 0.0}  # fmt: skip
    assert members["sgd"]["spec"]["dataset"]["params"] == {"n_samples": 600, "noise": 0.2}

    listed = stack.client.get("/experiments", params={"sweep_id": sweep["id"]}).json()
    assert sorted(e["id"] for e in listed["items"]) == sorted(ids)
    assert listed["next_cursor"] is None

    done = wait_sweep(stack, sweep["id"])
    assert done["counts"] == {"succeeded": 3}
    assert done["experiment_ids"] == ids
    again = stack.client.post(f"/sweeps/{sweep['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"] == "SweepFinished"


@pytest.mark.parametrize(
    ("variant", "loc", "words"),
    [
        ({"name": "bad-lr", "optimizer.lr": -1}, ["body", "variants", 1, "optimizer", "lr"], "row 'bad-lr'"),
        ({"name": "typo", "model.neuron": 4}, ["body", "variants", 1, "model.neuron"], "unknown path 'model.neuron'"),
        ({"name": "conv", "model.type": "cnn"}, ["body", "variants", 1, "model", "type"], "row 'conv'"),
        ({"name": "narrow"}, ["body", "variants", 1, "name"], "already row 0's"),
    ],
)
@pytest.mark.timeout(30)
def test_one_bad_row_refuses_the_sweep_and_stores_nothing(
    stack: Stack, variant: dict[str, Any], loc: list[Any], words: str
) -> None:
    experiments_before = all_experiment_ids(stack)
    sweeps_before = stack.client.get("/sweeps", params={"limit": 200}).json()["items"]
    body = post_sweep(stack, {"base": base_spec(), "variants": [{"name": "narrow"}, variant, {"name": "c"}]}, 422)
    assert body["error"] == "ValidationError"
    assert [e["loc"] for e in body["errors"]] == [loc], body["errors"]
    assert words in body["errors"][0]["msg"]
    assert words in body["detail"]
    assert all_experiment_ids(stack) == experiments_before
    assert stack.client.get("/sweeps", params={"limit": 200}).json()["items"] == sweeps_before


@pytest.mark.timeout(30)
def test_sweep_request_errors(stack: Stack) -> None:
    before = all_experiment_ids(stack)
    too_big = post_sweep(
        stack, {"base": base_spec(), "grid": {"model.neurons": list(range(1, 31)), "optimizer.lr": [0.01] * 20}}, 422
    )
    assert too_big["errors"][0]["type"] == "sweep_too_large"
    assert "600 experiments" in too_big["detail"]
    assert "LABTRAIN_MAX_SWEEP_SIZE" in too_big["detail"]
    repeated = post_sweep(stack, {"base": base_spec(), "variants": [{"name": "a"}] * 1, "repeats": 501}, 422)
    assert repeated["errors"][0]["loc"] == ["body", "repeats"]
    both = post_sweep(stack, {"base": base_spec(), "variants": [{"name": "a"}], "grid": {"epochs": [1]}}, 422)
    assert "exactly one of variants, grid or random" in both["detail"]
    shared = post_sweep(stack, {"base": base_spec(loss="gaussian_nll"), "grid": {"model.neurons": [4, 8]}}, 422)
    assert [e["loc"] for e in shared["errors"]] == [["body", "base", "loss"]]  # every row's problem, said once
    bad_space = {"samples": 2, "space": {"optimizer.lr": {"log": 1}}}
    space = post_sweep(stack, {"base": base_spec(), "random": bad_space}, 422)
    assert space["errors"][0]["loc"][:4] == ["body", "random", "space", "optimizer.lr"]
    assert all_experiment_ids(stack) == before
    missing = stack.client.get("/sweeps/doesnotexist")
    assert missing.status_code == 404
    assert missing.json() == {"error": "SweepNotFound", "detail": "no sweep with id 'doesnotexist'"}


@pytest.mark.timeout(90)
def test_cancel_a_sweep_stops_running_and_queued_members(stack: Stack) -> None:
    sweep = post_sweep(stack, {
        "name": "to-cancel",
        "base": base_spec(epochs=100_000),
        "variants": [{"name": "long"}, {"name": "parked", "device": "cuda"}],  # no test worker serves gpu
    })  # fmt: skip
    long_id, parked_id = sweep["experiment_ids"]
    wait_for(lambda: stack.experiment(long_id)["epochs_done"] >= 3, 60, what="a few epochs of the long member")
    response = stack.client.post(f"/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert stack.experiment(parked_id)["status"] == "cancelled"  # at once
    assert stack.experiment(long_id)["cancel_requested"] is True
    done = wait_sweep(stack, sweep["id"], status="cancelled", timeout=30)
    assert done["counts"] == {"cancelled": 2}
    assert stack.experiment(long_id)["epochs_done"] < 100_000
    again = stack.client.post(f"/sweeps/{sweep['id']}/cancel")
    assert again.status_code == 202  # cancelling a cancelled sweep changes nothing
    assert again.json()["counts"] == {"cancelled": 2}


@pytest.mark.timeout(90)
def test_table_with_repeats_gives_mean_and_std_and_marks_the_best(stack: Stack) -> None:
    sweep = post_sweep(stack, {
        "name": "repeats",
        "base": base_spec(epochs=12),
        "variants": [{"name": "tiny", "model.neurons": 2, "model.hidden_layers": 1, "keep": "last"}, {"name": "deep"}],
        "repeats": 3,
    })  # fmt: skip
    assert [(m["name"], m["repeat"]) for m in sweep["members"]] == [
        ("tiny", 0), ("tiny", 1), ("tiny", 2), ("deep", 0), ("deep", 1), ("deep", 2)]  # fmt: skip
    seeds = [stack.experiment(i)["spec"]["seed"] for i in sweep["experiment_ids"]]
    assert seeds == [0, 1, 2, 0, 1, 2]
    wait_sweep(stack, sweep["id"])

    body = table(stack, sweep["id"])
    assert body["metric"] == "val_accuracy"
    rows = {r["name"]: r for r in body["rows"]}
    assert list(rows) == ["tiny", "deep"]
    assert (rows["tiny"]["kept"], rows["deep"]["kept"]) == ("last", "best")
    for name, row in rows.items():
        # The table shows what each member serves: the last epoch's weights (keep: last) or the
        # best validation epoch's (keep: best, the default).
        members = [stack.experiment(i)["metrics"] for i in row["experiment_ids"]]
        accs = [m["served"]["val_accuracy"] for m in members]
        if row["kept"] == "last":
            assert [m["served"]["epoch"] for m in members] == [12, 12, 12]
        assert row["n"] == 3
        assert row["val_accuracy_mean"] == pytest.approx(statistics.fmean(accs))
        assert row["val_accuracy"] == row["val_accuracy_mean"]
        assert row["val_accuracy_std"] == pytest.approx(statistics.stdev(accs))
        assert row["status"] == "succeeded"
        assert row["par"] == stack.experiment(row["experiment_ids"][0])["param_count"], name
        assert (row["opt"], row["lr"], row["bs"], row["ep"], row["act"], row["loss"]) == (
            "adam", 0.01, 64, 12, "relu", "bce")  # fmt: skip
    assert (rows["tiny"]["hidlay"], rows["tiny"]["neur"], rows["deep"]["hidlay"], rows["deep"]["neur"]) == (1, 2, 2, 8)
    best = max(rows.values(), key=lambda r: r["val_accuracy_mean"])
    assert [r["name"] for r in body["rows"] if r["best"]] == [best["name"]]
    assert not any(k.startswith("test_") and k != "test_evaluations" for r in body["rows"] for k in r)

    parsed = list(csv.DictReader(io.StringIO(table(stack, sweep["id"], "csv"))))
    assert list(parsed[0]) == body["columns"]
    for line, row in zip(parsed, body["rows"], strict=True):
        assert float(line["val_accuracy_mean"]) == pytest.approx(row["val_accuracy_mean"])
        assert float(line["val_accuracy_std"]) == pytest.approx(row["val_accuracy_std"])
        assert line["best"] == str(row["best"]).lower()
        assert int(line["par"]) == row["par"]

    markdown = table(stack, sweep["id"], "markdown").splitlines()
    assert markdown[0].startswith("| name ")
    assert len({len(line) for line in markdown}) == 1  # aligned
    for row in body["rows"]:
        (line,) = [m for m in markdown if m.startswith(f"| {row['name']} ")]
        cells = [c.strip() for c in line.strip("|").split("|")]
        expected = f"{100 * row['val_accuracy_mean']:.1f} ± {100 * row['val_accuracy_std']:.1f}%"
        assert expected in cells
        assert str(row["par"]) in cells
        assert cells[-1] == ("✓" if row["best"] else "")


@pytest.mark.timeout(60)
def test_regression_table_marks_the_lowest_rmse(stack: Stack) -> None:
    base = {
        "dataset": {"name": "house_prices"},
        "model": {"hidden_layers": 1, "neurons": 4},
        "optimizer": {"name": "adam", "lr": 0.01},
        "batch_size": "full",
        "epochs": 5,
    }
    sweep = post_sweep(stack, {"name": "rmse", "base": base, "grid": {"optimizer.lr": [0.0001, 0.05]}})
    assert [m["name"] for m in sweep["members"]] == ["lr=0.0001", "lr=0.05"]
    wait_sweep(stack, sweep["id"])
    body = table(stack, sweep["id"])
    assert body["metric"] == "val_rmse"
    rmse = [r["val_rmse"] for r in body["rows"]]
    assert [r["best"] for r in body["rows"]] == [x == min(rmse) for x in rmse]
    assert all(r["bs"] == "full" and r["loss"] == "mse" and "val_accuracy" not in r for r in body["rows"])
    markdown = table(stack, sweep["id"], "markdown")
    assert f"{min(rmse):.0f}" in markdown


@pytest.mark.timeout(60)
def test_idempotency_key_and_listing(stack: Stack) -> None:
    body = {"name": "parked", "base": base_spec(device="cuda"), "grid": {"model.neurons": [4, 8]}}
    first = post_sweep(stack, body, **{"Idempotency-Key": "sweep-key-1"})
    second = post_sweep(stack, body, 200, **{"Idempotency-Key": "sweep-key-1"})
    assert second["id"] == first["id"]
    assert second["experiment_ids"] == first["experiment_ids"]
    other = post_sweep(stack, body | {"name": "other"}, 409, **{"Idempotency-Key": "sweep-key-1"})
    assert other["error"] == "IdempotencyKeyReused"
    newer = [post_sweep(stack, body | {"name": f"page-{i}"})["id"] for i in range(2)]

    pages: list[list[str]] = []
    cursor = None
    while len(pages) < 2:
        page = stack.client.get("/sweeps", params={"limit": 2} | ({"cursor": cursor} if cursor else {})).json()
        pages.append([s["id"] for s in page["items"]])
        cursor = page["next_cursor"]
    assert pages[0] == list(reversed(newer))  # newest first
    assert pages[1][0] == first["id"]
    assert stack.client.get("/sweeps", params={"cursor": "garbage!"}).json()["error"] == "InvalidCursor"
    for sweep_id in [first["id"], *newer]:
        assert stack.client.post(f"/sweeps/{sweep_id}/cancel").status_code == 202
        assert read_sweep(stack, sweep_id)["counts"] == {"cancelled": 2}


@pytest.mark.timeout(30)
def test_random_sweep_is_reproducible_for_a_seed(stack: Stack) -> None:
    space = {"optimizer.lr": {"log_uniform": [0.001, 0.1]}, "batch_size": {"choice": [16, 32]},
             "model.neurons": {"int": [2, 6]}}  # fmt: skip
    body = {"base": base_spec(device="cuda"), "random": {"samples": 3, "seed": 7, "space": space}}
    runs = [post_sweep(stack, body) for _ in range(2)]
    specs = [[stack.experiment(i)["spec"] for i in run["experiment_ids"]] for run in runs]
    assert [s["name"] for s in specs[0]] == ["sample-0", "sample-1", "sample-2"]
    assert specs[0] == specs[1]
    for spec in specs[0]:
        assert 0.001 <= spec["optimizer"]["lr"] <= 0.1
        assert spec["batch_size"] in (16, 32)
        assert 2 <= spec["model"]["neurons"] <= 6
    for run in runs:
        stack.client.post(f"/sweeps/{run['id']}/cancel")
    assert all(read_sweep(stack, r["id"])["counts"] == {"cancelled": 3} for r in runs)


@pytest.mark.timeout(90)
def test_study_runner_compares_with_the_report_and_looks_at_the_test_set_once(stack: Stack, tmp_path: Path) -> None:
    study = {
        "name": "mini-study",
        "base": base_spec(epochs=10),
        "variants": [{"name": "model9", "model.hidden_layers": 3, "model.neurons": 4}, {"name": "model4"}],
        "report": {"metric": "val_accuracy", "rows": {"model9": {"par": 57, "val": 0.70},
                                                      "model4": {"par": 119, "val": 0.5, "test": 0.6}}},
        "evaluate": {"rows": ["best"]},
    }  # fmt: skip
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(study))
    result = run_study(stack.client, path, tmp_path / "results", interval=0.1)

    assert result["sweep"]["counts"] == {"succeeded": 2}
    lines = {line["name"]: line for line in result["comparison"]}
    assert (lines["model9"]["par"], lines["model9"]["report_par"], lines["model9"]["report_val_accuracy"]) == (
        57, 57, 0.70)  # fmt: skip
    rows = {r["name"]: r for r in result["table"]["rows"]}
    assert lines["model4"]["val_accuracy"] == rows["model4"]["val_accuracy"]
    (best,) = [r for r in result["table"]["rows"] if r["best"]]
    (tested,) = result["test"]
    assert tested["name"] == best["name"]
    assert 0.0 <= tested["test"]["accuracy"] <= 1.0
    assert stack.experiment(best["experiment_ids"][0])["test_evaluations"] == 1
    written = (tmp_path / "results" / "mini.md").read_text()
    assert "| model9 " in written
    assert "70.0%" in written
    assert (tmp_path / "results" / "mini.csv").read_text().startswith("name,opt,lr,")

    again = run_study(stack.client, path, tmp_path / "results", interval=0.1)
    assert again["sweep"]["id"] == result["sweep"]["id"]  # the same file follows the same sweep
    assert again["test"][0]["test"] == tested["test"]
    assert stack.experiment(best["experiment_ids"][0])["test_evaluations"] == 1  # not looked at twice


@pytest.mark.timeout(60)
def test_owners_see_only_their_sweeps(keyed_api: httpx.Client) -> None:  # noqa: F811 (the fixture)
    alice, bob = {"Authorization": "Bearer key-a"}, {"X-API-Key": "key-b"}
    body = {"name": "alice's", "base": base_spec(device="cuda"), "variants": [{"name": "a"}]}
    assert keyed_api.post("/sweeps", json=body).status_code == 401
    created = keyed_api.post("/sweeps", json=body, headers=alice)
    assert created.status_code == 202
    sweep_id = created.json()["id"]
    for method, path in [("GET", f"/sweeps/{sweep_id}"), ("GET", f"/sweeps/{sweep_id}/table"),
                         ("POST", f"/sweeps/{sweep_id}/cancel")]:  # fmt: skip
        response = keyed_api.request(method, path, headers=bob)
        assert response.status_code == 404, path
        assert response.json()["error"] == "SweepNotFound"
    assert sweep_id not in [s["id"] for s in keyed_api.get("/sweeps", headers=bob).json()["items"]]
    assert keyed_api.get("/experiments", params={"sweep_id": sweep_id}, headers=bob).json()["items"] == []
    assert sweep_id in [s["id"] for s in keyed_api.get("/sweeps", headers=alice).json()["items"]]
    assert keyed_api.post(f"/sweeps/{sweep_id}/cancel", headers=alice).status_code == 202


@pytest.mark.timeout(120)
def test_compatible_members_train_as_one_group_and_end_as_they_would_alone(stack: Stack) -> None:
    base = base_spec(epochs=12, optimizer={"name": "sgd", "lr": 0.05})
    sweep = post_sweep(stack, {"name": "grouped", "base": base,
                               "grid": {"optimizer.lr": [0.02, 0.05, 0.1], "seed": [0, 1]}})  # fmt: skip
    done = wait_sweep(stack, sweep["id"], timeout=90)
    assert done["counts"] == {"succeeded": 6}
    logs = stack.all_worker_logs()
    assert "group of 6 on one stack" in logs
    # One member trained alone, outside any sweep, ends with the same numbers.
    member = stack.experiment(done["experiment_ids"][3])
    alone = stack.wait_terminal(stack.submit(member["spec"])["id"], timeout=60)
    assert alone["status"] == "succeeded"
    group_epochs, alone_epochs = stack.epochs(member["id"]), stack.epochs(alone["id"])
    assert [e["epoch"] for e in group_epochs] == list(range(1, 13))
    for g, a in zip(group_epochs, alone_epochs, strict=True):
        assert g["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        assert g["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=2 / 120)


@pytest.mark.timeout(90)
def test_labtrain_study_run_prints_the_comparison_and_refuses_clearly(stack: Stack, tmp_path: Path) -> None:
    import subprocess
    import sys

    study = {"name": "cli-study", "base": base_spec(epochs=5), "variants": [{"name": "model4"}],
             "report": {"metric": "val_accuracy", "rows": {"model4": {"par": 105, "val": 0.7}}},
             "evaluate": {"rows": ["best"]}}  # fmt: skip
    path = tmp_path / "cli.yaml"
    path.write_text(yaml.safe_dump(study))
    command = [sys.executable, "-m", "cli.main", "study", "run", str(path), "--url", stack.base_url,
               "--out", str(tmp_path / "results")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=80, env=stack.env)
    assert done.returncode == 0, done.stderr
    assert "| model4 " in done.stdout
    assert (tmp_path / "results" / "cli.json").is_file()
    missing = subprocess.run([*command[:5], str(tmp_path / "nope.yaml")], capture_output=True, text=True, env=stack.env)
    assert missing.returncode == 2  # a local problem, as the README says
    assert "no study file" in missing.stderr
