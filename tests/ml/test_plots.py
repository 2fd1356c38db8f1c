"""Plots: real PNGs of the expected size, not blank, drawing the numbers the model predicts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml import plots
from ml.data import load_dataset
from ml.predict import load_predictor
from ml.spec import validate_spec
from ml.train import train

SPIRALS = {"dataset": {"name": "spirals", "params": {"n_samples": 300}}, "model": {"hidden_layers": 2, "neurons": 8},
           "optimizer": {"name": "adam", "lr": 0.01}, "epochs": 5}  # fmt: skip
GAUSS = {"dataset": {"name": "house_prices"}, "loss": "gaussian_nll", "model": {"hidden_layers": 2, "neurons": 8},
         "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 256, "epochs": 5}  # fmt: skip


def decoded(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def assert_picture(png: bytes, size: tuple[int, int]) -> None:
    pixels = decoded(png)
    assert pixels.shape[1::-1] == size
    assert pixels.std() > 10  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


@pytest.fixture(scope="module")
def classifier() -> tuple:
    result = train(SPIRALS)
    return result, load_predictor(result.artifact), load_dataset(validate_spec(SPIRALS).spec)


@pytest.fixture(scope="module")
def gaussian() -> tuple:
    result = train(GAUSS)
    return result, load_predictor(result.artifact), load_dataset(validate_spec(GAUSS).spec)


def test_learning_curves_and_confusion_are_pictures(classifier: tuple) -> None:
    result, predictor, dataset = classifier
    assert_picture(plots.learning_curves([h.as_row() for h in result.history], "spirals"), (800, 500))
    assert_picture(plots.confusion(predictor, dataset, "spirals"), (600, 550))
    with pytest.raises(plots.PlotError, match="no epoch"):
        plots.learning_curves([], "empty")


def test_the_decision_boundary_draws_the_models_own_probabilities(classifier: tuple) -> None:
    _, predictor, dataset = classifier
    assert_picture(plots.decision_boundary(predictor, dataset, "spirals"), (700, 600))
    xs, ys, prob = plots.decision_grid(predictor, dataset, resolution=20)
    for i, j in [(0, 0), (5, 17), (19, 3), (10, 10)]:
        (expected,) = predictor.predict([[float(xs[j]), float(ys[i])]])
        assert prob[i, j] == pytest.approx(expected["probabilities"][1], abs=1e-6)


def test_the_sigma_curve_is_the_models_mu_and_sigma(gaussian: tuple) -> None:
    _, predictor, dataset = gaussian
    assert_picture(plots.sigma(predictor, dataset, "Gr_Liv_Area", "house"), (800, 700))
    inputs, values, mu, sigma = plots.sigma_curve(predictor, dataset, "Gr_Liv_Area", points=7)
    out = predictor.predict(inputs.tolist())
    assert [o["mu"] for o in out] == pytest.approx(mu.tolist(), rel=1e-6)
    assert [o["sigma"] for o in out] == pytest.approx(sigma.tolist(), rel=1e-6)
    assert (sigma > 0).all()
    assert values[0] == dataset.x[:, 5].min()


def test_plots_that_do_not_apply_are_refused(classifier: tuple, gaussian: tuple) -> None:
    _, clf, clf_data = classifier
    _, reg, reg_data = gaussian
    with pytest.raises(plots.PlotError, match="gaussian_nll"):
        plots.sigma(clf, clf_data, "x1", "x")
    with pytest.raises(plots.PlotError, match="2 input features"):
        plots.decision_boundary(reg, reg_data, "x")
    with pytest.raises(plots.PlotError, match="needs a classifier"):
        plots.confusion(reg, reg_data, "x")
    with pytest.raises(plots.PlotError, match="unknown feature 'size'"):
        plots.sigma(reg, reg_data, "size", "x")


def test_the_sweep_comparison_is_a_picture() -> None:
    rows = [{"name": f"model{i}", "par": 41 * (i + 1), "val_accuracy": 0.5 + i / 20, "opt": "sgd" if i % 2 else "adam"}
            for i in range(6)]  # fmt: skip
    assert_picture(plots.compare(rows, "val_accuracy", "opt", "sweep"), (800, 500))
    with pytest.raises(plots.PlotError, match="no row"):
        plots.compare([{"name": "a", "par": 1}], "val_accuracy", "opt", "sweep")
