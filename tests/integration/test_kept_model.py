"""What is served is what is reported: the README tour's Gaussian model trained through the
service serves its best validation epoch (`keep: best`, the default), and `metrics.served` is
what a validation evaluation of the served model finds; `keep: last` serves the last epoch.
Every epoch of a Gaussian model measures its calibration (shares within μ ± σ and μ ± 2σ)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml.artifact import read_artifact
from tests.conftest import Stack
from tests.integration.test_events import stream
from tests.integration.test_sweeps import post_sweep

pytestmark = pytest.mark.integration

TOUR: dict[str, Any] = yaml.safe_load((Path(__file__).parents[2] / "docs" / "tour" / "house_prices.yaml").read_text())


def _trained(stack: Stack, spec: dict[str, Any]) -> dict[str, Any]:
    done = stack.wait_terminal(stack.submit(spec)["id"], timeout=180)
    assert done["status"] == "succeeded", done["error"]
    return done


def _val_evaluation(stack: Stack, experiment_id: str) -> dict[str, Any]:
    response = stack.client.post(f"/experiments/{experiment_id}/evaluations", json={"split": "val"})
    assert response.status_code == 201, response.text
    return response.json()["metrics"]


@pytest.mark.timeout(300)
def test_the_tour_gaussian_model_serves_its_best_validation_epoch(stack: Stack) -> None:
    best_run = _trained(stack, {**TOUR, "name": "kept-best"})
    last_run = _trained(stack, {**copy.deepcopy(TOUR), "name": "kept-last", "keep": "last"})

    metrics = best_run["metrics"]
    served = metrics["served"]
    assert best_run["spec"]["keep"] == "best"
    assert served == metrics["best"]
    assert served["epoch"] < 800 == metrics["latest"]["epoch"]
    epochs = stack.epochs(best_run["id"])
    assert epochs[served["epoch"] - 1]["val_rmse"] == pytest.approx(served["val_rmse"])
    assert min(e["val_rmse"] for e in epochs) == pytest.approx(served["val_rmse"])

    evaluation = _val_evaluation(stack, best_run["id"])
    assert evaluation["rmse"] == pytest.approx(served["val_rmse"], rel=1e-5)
    assert evaluation["nll"] == pytest.approx(served["val_nll"], rel=1e-5)
    assert evaluation["nll"] < metrics["latest"]["val_nll"] - 1.0  # not the overfit last epoch

    model = stack.client.get(f"/experiments/{best_run['id']}/model")
    assert model.status_code == 200
    assert read_artifact(model.content).extra["kept_epoch"] == served["epoch"]

    last = last_run["metrics"]
    assert last["served"] == last["latest"]
    assert last["served"]["epoch"] == 800
    assert last["best"]["epoch"] == served["epoch"]  # the same training; only the kept weights differ
    evaluation = _val_evaluation(stack, last_run["id"])
    assert evaluation["nll"] == pytest.approx(last["served"]["val_nll"], rel=1e-5)
    assert evaluation["rmse"] == pytest.approx(last["served"]["val_rmse"], rel=1e-5)


CALIBRATION = ("val_within_1_sigma", "val_within_2_sigma")


@pytest.mark.timeout(300)
def test_gaussian_calibration_is_measured_every_epoch_alone_and_in_a_group(stack: Stack) -> None:
    short = {**copy.deepcopy(TOUR), "epochs": 60}
    alone = stack.submit({**short, "name": "calibration-alone"})
    events = stream(stack.client, f"/experiments/{alone['id']}/events")
    epoch_events = [e.data for e in events if e.event == "epoch"]
    assert len(epoch_events) == 60
    for data in epoch_events:
        assert 0.0 <= data["val_within_1_sigma"] <= data["val_within_2_sigma"] <= 1.0
    sweep = post_sweep(stack, {"name": "calibration-group", "base": short, "grid": {"seed": [0, 1, 2]}})
    for experiment_id in [alone["id"], *sweep["experiment_ids"]]:
        done = stack.wait_terminal(experiment_id, timeout=120)
        assert done["status"] == "succeeded", done["error"]
        rows = stack.epochs(experiment_id)
        assert [r["epoch"] for r in rows] == list(range(1, 61))
        assert all(set(CALIBRATION) <= set(r) for r in rows)
        served = done["metrics"]["served"]
        assert served == done["metrics"]["best"]
        assert rows[served["epoch"] - 1]["val_within_1_sigma"] == served["val_within_1_sigma"]
        # A validation evaluation of the served model measures the same shares.
        evaluation = _val_evaluation(stack, experiment_id)
        for key in CALIBRATION:
            assert evaluation[key.removeprefix("val_")] == pytest.approx(served[key], abs=1e-6)
    assert "group of 3" in stack.all_worker_logs()
    # A grouped member's stream carries them too (replayed from its stored epochs once it ended).
    member_events = stream(stack.client, f"/experiments/{sweep['experiment_ids'][1]}/events")
    member_epochs = [e.data for e in member_events if e.event == "epoch"]
    assert len(member_epochs) == 60
    assert all(set(CALIBRATION) <= set(data) for data in member_epochs)
