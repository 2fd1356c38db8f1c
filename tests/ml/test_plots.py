"""Plots: real PNGs of the expected size, not blank, drawing the numbers the model predicts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from ml import plots
from ml.data import load_dataset
from ml.plot_format import kept_epoch
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
    assert_picture(plots.learning_curves([h.as_row() for h in result.history], "spirals"), (1000, 400))
    assert_picture(plots.confusion(predictor, dataset, "spirals"), (600, 550))
    with pytest.raises(plots.PlotError, match="no epoch"):
        plots.learning_curves([], "empty")


def legend_texts(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def panels(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.get_visible()]


def marked_at(ax: Axes) -> list[float]:
    """The epochs of the panel's vertical marks."""
    xs = [np.asarray(line.get_xdata(), dtype=float) for line in ax.lines]
    return [float(x[0]) for x in xs if len(set(x.tolist())) == 1]


def test_learning_curves_put_each_quantity_on_its_own_panel_with_the_kept_epoch(gaussian: tuple) -> None:
    result, _, _ = gaussian
    rows = [h.as_row() for h in result.history]
    kept = kept_epoch(None, {"epoch": 3})
    fig = plots.curves_figure(rows, "house", kept=kept, unit="USD")
    titles = [ax.get_title() for ax in panels(fig)]
    assert titles[:3] == ["loss", "validation RMSE (USD)", "validation NLL"]  # never RMSE and NLL on one axis
    for ax in panels(fig):
        assert marked_at(ax) == [3], ax.get_title()
        assert "best: epoch 3" in legend_texts(ax)
    loss = panels(fig)[0]
    assert legend_texts(loss)[:2] == ["train", "validation"]
    fig.canvas.draw()
    rmse = panels(fig)[1]
    assert any("," in t.get_text() for t in rmse.get_yticklabels())  # dollars with thousands separators
    assert_picture(plots.learning_curves(rows, "house", kept=kept, unit="USD"), (1000, 700))


def test_a_panel_is_logarithmic_when_its_values_span_more_than_two_decades() -> None:
    # The σ-overfitted Gaussian model: NLL from 11.7 up to 1,828; its loss (standardized) negative.
    rows = [{"epoch": e, "train_loss": -0.5 - e / 100, "val_loss": 0.1 * e - 2, "val_rmse": 26_000 + 100 * e,
             "val_nll": 11.7 * 1.1 ** e, "val_within_1_sigma": 0.6, "val_within_2_sigma": 0.9}
            for e in range(1, 60)]  # fmt: skip
    fig = plots.curves_figure(rows, "t", kept=kept_epoch({"epoch": 12}, {"epoch": 9}))
    scales = {ax.get_title(): ax.get_yscale() for ax in panels(fig)}
    assert scales == {"loss": "linear", "validation RMSE": "linear", "validation NLL": "log",
                      "validation: share of targets within μ ± kσ": "linear"}  # fmt: skip
    # The same loss with one spike of 135,000 (the tour's model): symmetric-logarithmic, not flattened.
    spiked = [r | {"val_loss": 135_000.0} if r["epoch"] == 40 else r for r in rows]
    assert panels(plots.curves_figure(spiked, "t"))[0].get_yscale() == "symlog"
    within = panels(fig)[3]
    labels = legend_texts(within)
    assert labels == ["within 1σ (calibrated: 68.3%)", "within 2σ (calibrated: 95.5%)", "kept: epoch 12"]
    assert all(marked_at(ax) == [12] for ax in panels(fig))


def test_two_targets_share_the_accuracy_panel() -> None:
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_accuracy_digit": 0.9, "val_accuracy_color": 1.0,
             "val_accuracy": 0.95, "seconds": 1.0} for e in range(1, 7)]  # fmt: skip
    fig = plots.curves_figure(rows, "t")  # no kept epoch known: no mark
    assert [ax.get_title() for ax in panels(fig)] == ["loss", "validation accuracy"]
    assert legend_texts(panels(fig)[1]) == ["digit", "color", "mean"]
    assert all(marked_at(ax) == [] for ax in panels(fig))


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
    fig = plots.sigma_figure(predictor, dataset, "Gr_Liv_Area", "house")
    top, bottom = fig.axes
    assert top.get_ylabel() == "σ of Sale_Price (USD)"
    assert bottom.get_ylabel() == "Sale_Price (USD)"
    assert legend_texts(bottom) == ["sales", "μ (predicted mean)", "μ ± 2σ"]
    fig.canvas.draw()
    assert any("," in t.get_text() for t in bottom.get_yticklabels())  # 200,000, not 200000 or 2e5
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


def test_an_experiment_named_like_markup_is_drawn() -> None:
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_accuracy": 0.5} for e in (1, 2)]
    assert_picture(plots.learning_curves(rows, "a $\\frac{$ b (0123)"), (1000, 400))
