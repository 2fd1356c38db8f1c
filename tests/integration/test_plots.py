"""Plots through the real API, of models trained by real workers, on SQLite and PostgreSQL: real
PNGs of the expected size, the numbers drawn equal to what `/predictions` answers, refusals
that say why, and cached pictures with ETags that change when the data does."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from tests.conftest import Stack, wait_for
from tests.integration.serving import SPECS as SERVED
from tests.integration.test_experiments import parked_spec, tiny_spec
from tests.integration.test_sweeps import base_spec, post_sweep, wait_sweep
from tests.ml.test_plots import assert_picture

pytestmark = pytest.mark.integration

# The serving tests' models (one per kind of plot), shorter: a plot needs a model, not a good one.
SPECS: dict[str, dict[str, Any]] = {
    "binary": SERVED["binary"] | {"name": "plot-binary"},
    "digits": SERVED["multiclass"] | {"name": "plot-digits", "epochs": 2},
    "two_targets": SERVED["two_targets"] | {"name": "plot-two-targets", "epochs": 2},
    "gaussian": SERVED["gaussian"] | {"name": "plot-gaussian", "batch_size": 256, "epochs": 8},
}


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, str]:
    """kind → the id of a succeeded experiment."""
    created = {kind: stack.submit(spec)["id"] for kind, spec in SPECS.items()}
    for kind, experiment_id in created.items():
        done = stack.wait_terminal(experiment_id, timeout=120)
        assert done["status"] == "succeeded", (kind, done["error"])
    return created


@pytest.fixture(scope="module")
def sweep(stack: Stack) -> str:
    """A finished sweep of three rows that differ in width and activation."""
    body = post_sweep(stack, {
        "name": "plot-sweep",
        "base": base_spec(epochs=8),
        "variants": [{"name": "narrow"}, {"name": "wide", "model.neurons": 24},
                     {"name": "tanh", "model.activation": "tanh"}],
    })  # fmt: skip
    wait_sweep(stack, body["id"], timeout=120)
    return body["id"]


@pytest.fixture(scope="module")
def sweeps(stack: Stack, sweep: str) -> dict[str, str]:
    """kind → a finished sweep: variants (above), a learning-rate grid with repeats, a random search."""
    grid = post_sweep(stack, {"name": "plot-lr-grid", "base": base_spec(epochs=6),
                              "grid": {"optimizer.lr": [0.001, 0.01, 0.1]}, "repeats": 2})  # fmt: skip
    space = {"optimizer.lr": {"log_uniform": [1e-4, 0.1]}, "model.neurons": {"choice": [4, 8]}}
    search = post_sweep(stack, {"name": "plot-random", "base": base_spec(epochs=6),
                                "random": {"samples": 5, "seed": 1, "space": space}})  # fmt: skip
    for body in (grid, search):
        wait_sweep(stack, body["id"], timeout=120)
    return {"variants": sweep, "grid": grid["id"], "random": search["id"]}


def png(stack: Stack, path: str, **params: str) -> bytes:
    response = stack.client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return response.content


def refused(stack: Stack, path: str, status: int, error: str, **params: str) -> dict[str, Any]:
    response = stack.client.get(path, params=params)
    assert response.status_code == status, (path, response.text)
    body = response.json()
    assert body["error"] == error, body
    return body


def predict(stack: Stack, experiment_id: str, rows: list[Any]) -> list[dict[str, Any]]:
    response = stack.client.post(f"/experiments/{experiment_id}/predictions", json={"inputs": rows})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


@pytest.mark.timeout(240)
def test_every_plot_is_a_picture_of_the_expected_size(stack: Stack, trained: dict[str, str], sweep: str) -> None:
    # Learning curves: a panel per quantity, two per row (loss and accuracy; loss, RMSE, NLL, ...).
    for kind in ("binary", "digits", "two_targets"):
        assert_picture(png(stack, f"/experiments/{trained[kind]}/plots/learning-curves.png"), (1000, 400))
    assert_picture(png(stack, f"/experiments/{trained['gaussian']}/plots/learning-curves.png"), (1000, 700))
    binary, gaussian = trained["binary"], trained["gaussian"]
    assert_picture(png(stack, f"/experiments/{binary}/plots/decision-boundary.png"), (700, 600))
    assert_picture(png(stack, f"/experiments/{binary}/plots/confusion.png"), (600, 550))
    assert_picture(png(stack, f"/experiments/{trained['digits']}/plots/confusion.png"), (600, 550))
    # One matrix per target, side by side.
    assert_picture(png(stack, f"/experiments/{trained['two_targets']}/plots/confusion.png"), (1200, 550))
    sigma = png(stack, f"/experiments/{gaussian}/plots/sigma.png", feature="Gr_Liv_Area")
    assert_picture(sigma, (800, 700))
    assert png(stack, f"/experiments/{gaussian}/plots/sigma.png", feature="Year_Built") != sigma
    assert_picture(png(stack, f"/sweeps/{sweep}/plots/compare.png"), (800, 500))
    by_act = png(stack, f"/sweeps/{sweep}/plots/compare.png", color_by="act")
    assert_picture(by_act, (800, 500))
    assert png(stack, f"/sweeps/{sweep}/plots/compare.png", color_by="neur") != by_act


@pytest.mark.timeout(120)
def test_the_decision_boundary_agrees_with_predictions(stack: Stack, trained: dict[str, str]) -> None:
    binary = trained["binary"]
    response = stack.client.get(f"/experiments/{binary}/plots/decision-boundary.json")
    assert response.status_code == 200, response.text
    grid = response.json()
    assert grid["features"] == ["x1", "x2"]
    assert grid["class"] == "1"
    xs, ys, prob = np.array(grid["x1"]), np.array(grid["x2"]), np.array(grid["probability"])
    assert prob.shape == (len(ys), len(xs)) == (150, 150)
    assert np.all(np.diff(xs) > 0)
    assert np.all(np.diff(ys) > 0)
    assert prob.min() < 0.5 < prob.max()  # a boundary crosses the plane
    rng = np.random.default_rng(0)
    cells = [(int(i), int(j)) for i, j in rng.integers(0, 150, size=(40, 2))] + [(0, 0), (149, 149), (0, 149)]
    answers = predict(stack, binary, [[float(xs[j]), float(ys[i])] for i, j in cells])
    for (i, j), answer in zip(cells, answers, strict=True):
        assert answer["probabilities"][-1] == pytest.approx(prob[i, j], rel=1e-5, abs=1e-6), (i, j)
        assert answer["label"] == (1 if prob[i, j] > 0.5 else 0) or abs(prob[i, j] - 0.5) < 1e-6


@pytest.mark.timeout(120)
def test_the_sigma_curve_equals_predictions(stack: Stack, trained: dict[str, str]) -> None:
    gaussian = trained["gaussian"]
    response = stack.client.get(f"/experiments/{gaussian}/plots/sigma.json", params={"feature": "Gr_Liv_Area"})
    assert response.status_code == 200, response.text
    curve = response.json()
    assert curve["feature"] == "Gr_Liv_Area"
    j = curve["features"].index("Gr_Liv_Area")
    inputs = np.array(curve["inputs"])
    assert inputs.shape == (100, 10)
    assert np.array_equal(inputs[:, j], np.array(curve["values"], dtype=np.float32))
    assert np.all(np.diff(inputs[:, j]) > 0)
    others = np.delete(inputs, j, axis=1)
    assert np.all(others == others[0])  # the other features held at one value (their training median)
    answers = predict(stack, gaussian, curve["inputs"])
    assert [a["mu"] for a in answers] == pytest.approx(curve["mu"], rel=1e-5)
    assert [a["sigma"] for a in answers] == pytest.approx(curve["sigma"], rel=1e-5)
    assert all(s > 0 for s in curve["sigma"])
    default = stack.client.get(f"/experiments/{gaussian}/plots/sigma.json").json()
    assert default["feature"] == curve["features"][0]  # no ?feature=: the first one
    assert (curve["target"], curve["unit"]) == ("Sale_Price", "USD")  # what the PNG's axes say


@pytest.mark.timeout(240)
def test_the_compare_plot_puts_the_swept_parameter_on_x(stack: Stack, sweeps: dict[str, str]) -> None:
    grid, search, variants = (f"/sweeps/{sweeps[k]}/plots/compare.png" for k in ("grid", "random", "variants"))
    by_lr = png(stack, grid)  # the learning rate, detected from the grid, with error bars over 2 seeds
    assert_picture(by_lr, (800, 500))
    assert png(stack, grid, x="optimizer.lr") == by_lr
    assert_picture(png(stack, grid, x="lr"), (800, 500))  # the table's column: the same values, named lr
    by_size = png(stack, grid, x="parameters")
    assert_picture(by_size, (800, 500))
    assert by_size != by_lr
    # Every row is relu: a colour of one value says nothing and is dropped.
    assert png(stack, grid, color_by="act") == by_lr
    assert png(stack, grid, color_by="model.activation") == by_lr
    assert png(stack, grid, color_by="lr") != by_lr
    assert_picture(png(stack, search), (800, 500))  # x: optimizer.lr; colour: model.neurons
    assert png(stack, search, x="model.neurons", color_by="optimizer.lr") != png(stack, search)
    assert_picture(png(stack, variants, x="model.activation"), (800, 500))  # a categorical x
    assert_picture(png(stack, variants, x="dataset.params.noise"), (800, 500))  # any path: one value


@pytest.mark.timeout(240)
def test_an_uploads_plots_speak_of_its_target_not_of_sales(stack: Stack) -> None:
    rng = np.random.default_rng(0)
    age, bmi = rng.uniform(20, 80, 300), rng.uniform(18, 40, 300)
    progression = 3 * age + 5 * bmi + rng.normal(0, 10 + age / 4)
    rows = "".join(f"{a:.2f},{b:.2f},{p:.1f}\n" for a, b, p in zip(age, bmi, progression, strict=True))
    form = {"target": "progression", "name": f"diabetes-{uuid.uuid4().hex[:6]}"}
    response = stack.client.post(
        "/datasets", files={"file": ("diabetes.csv", "age,bmi,progression\n" + rows)}, data=form
    )
    assert response.status_code == 201, response.text
    spec = SPECS["gaussian"] | {
        "name": "plot-upload",
        "dataset": {"id": response.json()["id"]},
        "batch_size": 32,
        "epochs": 4,
    }
    experiment_id = stack.submit(spec)["id"]
    assert stack.wait_terminal(experiment_id, timeout=120)["status"] == "succeeded"
    curve = stack.client.get(f"/experiments/{experiment_id}/plots/sigma.json", params={"feature": "age"}).json()
    assert (curve["target"], curve["unit"]) == ("progression", "progression")
    assert_picture(png(stack, f"/experiments/{experiment_id}/plots/sigma.png", feature="age"), (800, 700))
    assert_picture(png(stack, f"/experiments/{experiment_id}/plots/learning-curves.png"), (1000, 700))


@pytest.mark.timeout(120)
def test_plots_that_do_not_apply_are_refused_saying_why(stack: Stack, trained: dict[str, str], sweep: str) -> None:
    base = "/experiments/{}/plots/{}"
    body = refused(stack, base.format(trained["digits"], "decision-boundary.png"), 422, "PlotNotApplicable")
    assert "needs 2 input features" in body["detail"]
    assert body["errors"][0]["loc"] == ["path", "kind"]
    body = refused(stack, base.format(trained["binary"], "sigma.png"), 422, "PlotNotApplicable")
    assert "gaussian_nll" in body["detail"]
    assert "bce" in body["detail"]
    body = refused(stack, base.format(trained["gaussian"], "confusion.png"), 422, "PlotNotApplicable")
    assert "needs a classifier" in body["detail"]
    refused(stack, base.format(trained["digits"], "decision-boundary.json"), 422, "PlotNotApplicable")

    body = refused(stack, base.format(trained["gaussian"], "sigma.png"), 422, "ValidationError", feature="Price")
    (error,) = body["errors"]
    assert error["loc"] == ["query", "feature"]
    assert "unknown feature 'Price'" in error["msg"]
    assert "Gr_Liv_Area" in error["msg"]
    body = refused(stack, base.format(trained["binary"], "pie.png"), 422, "ValidationError")
    assert body["errors"][0]["loc"] == ["path", "kind"]
    assert "learning-curves" in body["errors"][0]["msg"]
    refused(stack, base.format(trained["binary"], "confusion.json"), 422, "ValidationError")

    body = refused(stack, base.format("nope", "learning-curves.png"), 404, "ExperimentNotFound")
    assert body["detail"] == "no experiment with id 'nope'"
    refused(stack, base.format("nope", "confusion.png"), 404, "ExperimentNotFound")
    refused(stack, "/sweeps/nope/plots/compare.png", 404, "SweepNotFound")

    parked = stack.submit(parked_spec("plot-parked"))["id"]  # stays queued: no test worker serves the gpu queue
    body = refused(stack, base.format(parked, "learning-curves.png"), 409, "PlotNotReady")
    assert body["status"] == "queued"
    assert "no finished epoch yet" in body["detail"]
    for kind in ("decision-boundary.png", "confusion.png", "decision-boundary.json"):
        body = refused(stack, base.format(parked, kind), 409, "ExperimentNotFinished")
        assert body["status"] == "queued"
    assert stack.client.post(f"/experiments/{parked}/cancel").status_code == 202

    compare = f"/sweeps/{sweep}/plots/compare.png"
    body = refused(stack, compare, 422, "ValidationError", color_by="colour")
    assert body["errors"][0]["loc"] == ["query", "color_by"]
    assert "act" in body["errors"][0]["msg"]
    body = refused(stack, compare, 422, "ValidationError", metric="val_rmse")
    assert "val_accuracy" in body["errors"][0]["msg"]
    for x, why in (("model.depth", "has no field 'depth'"), ("optimizer", "is an object"),
                   ("early_stopping.patience", "no row of this sweep has a value")):  # fmt: skip
        (error,) = refused(stack, compare, 422, "ValidationError", x=x)["errors"]
        assert error["loc"] == ["query", "x"]
        assert why in error["msg"]
        assert "parameters" in error["msg"]
        assert "model.neurons, model.activation" in error["msg"]  # the paths this sweep varies
    (error,) = refused(stack, compare, 422, "ValidationError", color_by="model.depth")["errors"]
    assert error["loc"] == ["query", "color_by"]


@pytest.mark.timeout(120)
def test_plots_are_cached_and_change_only_with_their_data(stack: Stack, trained: dict[str, str]) -> None:
    url = f"/experiments/{trained['binary']}/plots/decision-boundary.png"
    first, second = stack.client.get(url), stack.client.get(url)
    assert first.content == second.content
    etag = first.headers["etag"]
    assert etag == second.headers["etag"]
    assert first.headers["cache-control"].startswith("private, max-age=")  # a succeeded model never changes
    unchanged = stack.client.get(url, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert stack.client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200

    # A running experiment's learning curves follow its epochs: no-cache while it runs, a new
    # picture once more epochs are stored, and a final one after it ends.
    running = stack.submit(tiny_spec("plot-live", epochs=5000))["id"]
    wait_for(lambda: stack.experiment(running)["epochs_done"] >= 2, 60, what="two epochs")
    curves = f"/experiments/{running}/plots/learning-curves.png"
    live = stack.client.get(curves)
    assert live.status_code == 200, live.text
    assert live.headers["cache-control"] == "no-cache"
    seen = stack.experiment(running)["epochs_done"]
    wait_for(lambda: stack.experiment(running)["epochs_done"] >= seen + 5, 60, what="five more epochs")
    assert stack.client.post(f"/experiments/{running}/cancel").status_code == 202
    assert stack.wait_terminal(running)["status"] == "cancelled"
    final = stack.client.get(curves)
    assert final.status_code == 200
    assert final.headers["etag"] != live.headers["etag"]
    assert final.content != live.content
    assert final.headers["cache-control"].startswith("private, max-age=")
    assert stack.client.get(curves, headers={"If-None-Match": live.headers["etag"]}).status_code == 200
    assert_picture(final.content, (1000, 400))
    # A cancelled run has no model: the model plots say so.
    refused(stack, f"/experiments/{running}/plots/confusion.png", 409, "ExperimentNotFinished")
