"""What is served is what is reported: the README tour's Gaussian model trained through the
service serves its best validation epoch (`keep: best`, the default), and `metrics.served` is
what a validation evaluation of the served model finds; `keep: last` serves the last epoch."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml.artifact import read_artifact
from tests.conftest import Stack

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
