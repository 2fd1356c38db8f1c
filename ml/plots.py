"""Pictures of experiments as PNG bytes, drawn with matplotlib's object API (no pyplot state, so
concurrent requests never share a figure). Every function takes stored data (metrics rows) or a
loaded model with its dataset, and the numbers a plot draws are available on their own
(`decision_grid`, `sigma_curve`) so tests can check them against `/predictions`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ml.data import split_of
from ml.datasets import Dataset
from ml.predict import Predictor
from ml.spec import ExperimentSpec

SIZE = (8.0, 5.0)  # inches
DPI = 100  # -> 800 x 500 pixels


class PlotError(ValueError):
    """This plot does not apply to this experiment; the message says why."""


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _figure(size: tuple[float, float] = SIZE) -> Figure:
    return Figure(figsize=size, dpi=DPI, layout="constrained")


def learning_curves(rows: Sequence[dict[str, Any]], title: str) -> bytes:
    """Train and validation loss per epoch (left), and every validation metric (right)."""
    if not rows:
        raise PlotError("no epoch has finished yet: there is no learning curve to draw")
    epochs = [r["epoch"] for r in rows]
    fig = _figure()
    loss_ax, metric_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
    loss_ax.plot(epochs, [r["val_loss"] for r in rows], label="validation loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_yscale("log" if all((r["train_loss"] or 0) > 0 for r in rows) else "linear")
    loss_ax.legend()
    metrics = [k for k in rows[-1] if k.startswith("val_") and k != "val_loss"]
    for key in metrics:
        metric_ax.plot(epochs, [r.get(key) for r in rows], label=key)
    metric_ax.set_xlabel("epoch")
    metric_ax.set_ylabel("validation metric")
    if metrics:
        metric_ax.legend()
    fig.suptitle(title)
    return _png(fig)


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
    fig = _figure((7.0, 6.0))
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
    return _png(fig)


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


def sigma(predictor: Predictor, dataset: Dataset, feature: str, title: str) -> bytes:
    """The report's Figure 1: σ(x) against one feature (top); μ ± 2σ with the data (bottom)."""
    _, values, mu, sd = sigma_curve(predictor, dataset, feature)
    j = predictor.info.features.index(feature)
    target = predictor.info.targets[0].name
    fig = _figure((8.0, 7.0))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(values, sd, color="tab:red")
    top.set_ylabel(f"σ ({target})")
    top.set_title(title)
    bottom.scatter(dataset.x[:, j], dataset.y[target], s=4, alpha=0.3, color="gray", label="sales")
    bottom.plot(values, mu, color="tab:blue", label="μ")
    bottom.fill_between(values, mu - 2 * sd, mu + 2 * sd, color="tab:blue", alpha=0.2, label="μ ± 2σ")
    bottom.set_xlabel(f"{feature} (other features at their training median)")
    bottom.set_ylabel(target)
    bottom.legend()
    return _png(fig)


def confusion(predictor: Predictor, dataset: Dataset, title: str, split: str = "val") -> bytes:
    """One confusion matrix per classification target, on the validation split."""
    targets = [t for t in predictor.info.targets if t.classes is not None]
    if not targets:
        raise PlotError("a confusion matrix needs a classifier; this model predicts values")
    spec = ExperimentSpec.model_validate(predictor.spec)
    rows = split_of(spec, dataset)[split]
    out = predictor.predict_array(dataset.x[rows])
    fig = _figure((6.0 * len(targets), 5.5))
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
    return _png(fig)


def compare(rows: Sequence[dict[str, Any]], metric: str, color_by: str, title: str) -> bytes:
    """A sweep: validation metric against parameter count, one labelled point per row."""
    usable = [r for r in rows if r.get(metric) is not None and r.get("par") is not None]
    if not usable:
        raise PlotError(f"no row of this sweep has {metric} yet")
    fig = _figure()
    ax = fig.subplots()
    groups = sorted({str(r.get(color_by)) for r in usable})
    colors = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    for g in groups:
        pts = [r for r in usable if str(r.get(color_by)) == g]
        ax.scatter([r["par"] for r in pts], [r[metric] for r in pts], color=colors[g], label=f"{color_by}={g}")
    for r in usable:
        ax.annotate(str(r["name"]), (r["par"], r[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _png(fig)
