"""Pictures of experiments as PNG bytes, drawn with matplotlib's object API (ml/figures.py; the
sweep comparison is ml/sweep_plots.py). Every function takes stored data (metrics rows) or a
loaded model with its dataset, and the numbers a plot draws are available on their own
(`decision_grid`, `sigma_curve`) so tests can check them against `/predictions`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from ml.data import split_of
from ml.datasets import Dataset
from ml.figures import figure, number_axis, png
from ml.plot_format import KeptEpoch, PlotError, Wording, wording, y_scale
from ml.predict import Predictor
from ml.spec import ExperimentSpec

# Which panel a validation metric goes on (one panel per quantity), by key prefix, and its title.
QUANTITIES = (
    ("val_accuracy", "validation accuracy"),
    ("val_rmse", "validation RMSE"),
    ("val_nll", "validation NLL"),
    ("val_within_", "validation: share of targets within μ ± kσ"),
)
# What a calibrated Gaussian holds within μ ± 1σ and μ ± 2σ: the reference lines of that panel.
CALIBRATED = {"val_within_1_sigma": 0.6827, "val_within_2_sigma": 0.9545}


def curve_panels(keys: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The learning-curve panels from an epoch row's keys: (title, series keys), the loss first,
    then one per validation quantity in the order of QUANTITIES, then any other metric alone."""
    panels: list[tuple[str, list[str]]] = [("loss", [k for k in ("train_loss", "val_loss") if k in keys])]
    metrics = [k for k in keys if k.startswith("val_") and k != "val_loss"]
    for prefix, title in QUANTITIES:
        mine = [k for k in metrics if k.startswith(prefix)]
        if mine:
            panels.append((title, mine))
    known = {k for _, ks in panels for k in ks}
    panels += [(k, [k]) for k in metrics if k not in known]
    return panels


def _series_label(key: str, keys: Sequence[str]) -> str:
    if key in ("train_loss", "val_loss"):
        return {"train_loss": "train", "val_loss": "validation"}[key]
    if key in CALIBRATED:
        return f"within {key.split('_')[2]}σ (calibrated: {CALIBRATED[key]:.1%})"
    prefix = next((p for p, _ in QUANTITIES if key.startswith(p)), key)
    if len(keys) == 1:
        return key.removeprefix("val_")
    return key.removeprefix(prefix).lstrip("_") or "mean"  # per target; the bare key is their mean


def learning_curves(
    rows: Sequence[dict[str, Any]], title: str, *, kept: KeptEpoch | None = None, unit: str | None = None
) -> bytes:
    """curves_figure as PNG bytes: 1000 x 400 for two panels, 1000 x 700 for three or four."""
    return png(curves_figure(rows, title, kept=kept, unit=unit))


def curves_figure(
    rows: Sequence[dict[str, Any]], title: str, *, kept: KeptEpoch | None = None, unit: str | None = None
) -> Figure:
    """One panel per quantity against the epoch: the loss (train and validation), then each
    validation metric (accuracy, RMSE in `unit`, NLL, the within-σ shares beside their calibrated
    values). A panel is logarithmic when its values are positive and span more than two decades
    (symmetric-logarithmic when a spike rises that far above values that are not all positive);
    `kept` is marked on every panel."""
    if not rows:
        raise PlotError("no epoch has finished yet: there is no learning curve to draw")
    epochs = [r["epoch"] for r in rows]
    panels = curve_panels(list(rows[-1]))
    cols = min(2, len(panels))
    lines = math.ceil(len(panels) / cols)
    fig = figure((10.0, 4.0 if lines == 1 else 3.5 * lines))
    axes = fig.subplots(lines, cols, sharex=True, squeeze=False).ravel()
    for ax, (name, keys) in zip(axes, panels, strict=False):
        values: list[float] = []
        for key in keys:
            series = [math.nan if r.get(key) is None else float(r[key]) for r in rows]
            values += series
            ax.plot(epochs, series, label=_series_label(key, keys), lw=1.2)
            if key in CALIBRATED:
                ax.axhline(CALIBRATED[key], color=ax.lines[-1].get_color(), ls=":", lw=1)
        scale, linthresh = y_scale(values)
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=linthresh)
        elif scale == "log":
            ax.set_yscale("log")
        if name.startswith(("validation accuracy", "validation: share")):
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        else:
            number_axis(ax.yaxis)
        ax.set_title(name + (f" ({unit})" if unit and name == "validation RMSE" else ""), fontsize=10)
        if kept is not None:
            ax.axvline(kept.epoch, color="0.35", ls="--", lw=1, label=kept.label)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-cols:]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(title)
    return fig


def _need_two_features(predictor: Predictor) -> None:
    if predictor.info.input_shape != (2,):
        raise PlotError(
            f"a decision boundary needs 2 input features; {predictor.info.name} has input shape "
            f"{list(predictor.info.input_shape)}"
        )
    if predictor.info.targets[0].classes is None or len(predictor.info.targets) != 1:
        raise PlotError("a decision boundary needs a classifier with one target")


def plane_bounds(dataset: Dataset, margin: float = 0.1) -> tuple[float, float, float, float]:
    lo, hi = dataset.x.min(axis=0), dataset.x.max(axis=0)
    pad = (hi - lo) * margin
    return float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1])


def decision_grid(
    predictor: Predictor, dataset: Dataset, resolution: int = 150
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid the boundary plot colors: x1 (R,), x2 (R,), and the probability of the last
    class at every point (R, R), computed exactly as `/predictions` computes it."""
    _need_two_features(predictor)
    x0, x1, y0, y1 = plane_bounds(dataset)
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    gx, gy = np.meshgrid(xs, ys)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    rows = predictor.predict_array(points)
    prob = np.array([r["probabilities"][-1] for r in rows]).reshape(resolution, resolution)
    return xs, ys, prob


def decision_boundary(predictor: Predictor, dataset: Dataset, title: str) -> bytes:
    xs, ys, prob = decision_grid(predictor, dataset)
    spec = ExperimentSpec.model_validate(predictor.spec)
    idx = split_of(spec, dataset)
    fig = figure((7.0, 6.0))
    ax = fig.subplots()
    mesh = ax.contourf(xs, ys, prob, levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.8)
    ax.contour(xs, ys, prob, levels=[0.5], colors="black", linewidths=1.0)
    fig.colorbar(mesh, ax=ax, label=f"P(class {predictor.info.targets[0].classes[-1]})")  # type: ignore[index]
    label = dataset.y[predictor.info.targets[0].name]
    for split, marker in (("train", "o"), ("val", "^")):
        rows = idx[split]
        ax.scatter(dataset.x[rows, 0], dataset.x[rows, 1], c=label[rows], cmap="RdBu_r", marker=marker, s=12,
                   edgecolors="white", linewidths=0.4, label=f"{split} ({len(rows)})")  # fmt: skip
    ax.set_xlabel(predictor.info.features[0])
    ax.set_ylabel(predictor.info.features[1])
    ax.legend(loc="upper right")
    ax.set_title(title)
    return png(fig)


def sigma_curve(
    predictor: Predictor, dataset: Dataset, feature: str, points: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inputs along `feature` (its observed range, the others at their training median), and the
    predicted μ and σ there: (inputs (N, F), feature values (N,), mu (N,), sigma (N,))."""
    if predictor.loss != "gaussian_nll":
        raise PlotError(f"the sigma plot needs a gaussian_nll model; this one was trained with {predictor.loss}")
    if feature not in predictor.info.features:
        raise PlotError(f"unknown feature {feature!r}; the features are {', '.join(predictor.info.features)}")
    j = predictor.info.features.index(feature)
    spec = ExperimentSpec.model_validate(predictor.spec)
    train_rows = split_of(spec, dataset)["train"]
    median = np.median(dataset.x[train_rows], axis=0)
    values = np.linspace(dataset.x[:, j].min(), dataset.x[:, j].max(), points)
    inputs = np.repeat(median[None, :], points, axis=0).astype(np.float32)
    inputs[:, j] = values
    out = predictor.predict_array(inputs)
    return inputs, values, np.array([r["mu"] for r in out]), np.array([r["sigma"] for r in out])


def sigma_wording(predictor: Predictor, dataset: Dataset) -> Wording:
    """Units and row names of the σ plot: USD and "sales" for house prices, an upload's target
    column and its own name."""
    source = {**predictor.spec["dataset"], "name": dataset.info.name}
    return wording(source, predictor.info.targets[0].name)


def sigma(predictor: Predictor, dataset: Dataset, feature: str, title: str) -> bytes:
    """sigma_figure as PNG bytes (800 x 700)."""
    return png(sigma_figure(predictor, dataset, feature, title))


def sigma_figure(predictor: Predictor, dataset: Dataset, feature: str, title: str) -> Figure:
    """The report's Figure 1: σ(x) against one feature (top); μ ± 2σ with the data (bottom), in
    the dataset's units (thousands separators) and words ("sales" only for house prices)."""
    _, values, mu, sd = sigma_curve(predictor, dataset, feature)
    j = predictor.info.features.index(feature)
    target = predictor.info.targets[0].name
    words = sigma_wording(predictor, dataset)
    fig = figure((8.0, 7.0))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(values, sd, color="tab:red")
    top.set_ylabel(words.axis(f"σ of {target}"))
    top.set_title(title)
    bottom.scatter(dataset.x[:, j], dataset.y[target], s=4, alpha=0.3, color="gray", label=words.rows)
    bottom.plot(values, mu, color="tab:blue", label="μ (predicted mean)")
    bottom.fill_between(values, mu - 2 * sd, mu + 2 * sd, color="tab:blue", alpha=0.2, label="μ ± 2σ")
    bottom.set_xlabel(f"{feature} (other features at their training median)")
    bottom.set_ylabel(words.axis(target))
    for axis in (top.yaxis, bottom.yaxis, bottom.xaxis):
        number_axis(axis)
    bottom.legend()
    return fig


def confusion(predictor: Predictor, dataset: Dataset, title: str, split: str = "val") -> bytes:
    """One confusion matrix per classification target, on the validation split."""
    targets = [t for t in predictor.info.targets if t.classes is not None]
    if not targets:
        raise PlotError("a confusion matrix needs a classifier; this model predicts values")
    spec = ExperimentSpec.model_validate(predictor.spec)
    rows = split_of(spec, dataset)[split]
    out = predictor.predict_array(dataset.x[rows])
    fig = figure((6.0 * len(targets), 5.5))
    axes = np.atleast_1d(fig.subplots(1, len(targets)))
    for ax, t in zip(axes, targets, strict=True):
        classes = list(t.classes or ())
        pred = [classes.index(str((r[t.name] if len(predictor.info.targets) > 1 else r)["label"])) for r in out]
        matrix = np.zeros((len(classes), len(classes)), dtype=int)
        np.add.at(matrix, (dataset.y[t.name][rows], pred), 1)
        ax.imshow(matrix, cmap="Blues")
        for (i, k), count in np.ndenumerate(matrix):
            ax.text(k, i, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > matrix.max() / 2 else "black")  # fmt: skip
        ax.set_xticks(range(len(classes)), classes, rotation=45)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        accuracy = np.trace(matrix) / max(1, matrix.sum())
        ax.set_title(f"{t.name}: {accuracy:.1%} on {split}")
    fig.suptitle(title)
    return png(fig)
