"""Plots as PNG, drawn in the API process from stored data (ml/plots.py draws them) and kept in a
small LRU of rendered images.

A cache key names everything a picture is made of: the experiment, the kind and feature, and
either the exact stored model (artifact row id, creation time, sha256) or, for learning curves,
the status and the last stored epoch row. A new epoch or a replaced model is a new key, so a
stale picture is never served. A terminal experiment's pictures never change (`final`).
matplotlib and torch are imported on first use, never at API start-up.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

from api.errors import InvalidInputs, PlotNotApplicable, PlotNotReady
from api.model_cache import ModelCache
from api.schemas import epoch_row
from api.services.experiments import get_experiment
from api.services.predictions import cached_model, evaluation_dataset, serving_ref
from api.services.sweeps import sweep_table
from core.artifact_store import ArtifactStore
from core.repositories import metrics as metrics_repo
from core.tables import TERMINAL_STATUSES, Experiment

ExperimentPlot = Literal["learning-curves", "decision-boundary", "sigma", "confusion"]
PlotData = Literal["decision-boundary", "sigma"]
CACHE_SIZE = 64  # rendered PNGs (about 30-150 kB each)
# Columns of the sweep table that can color the compare plot (those present in the table).
COLOR_COLUMNS = ("opt", "lr", "bs", "ep", "convlay", "ks", "hidlay", "neur", "act", "loss", "shared", "status")


@dataclass(frozen=True)
class Plot:
    png: bytes
    etag: str  # quoted, of the bytes
    final: bool  # drawn from data that can no longer change


class PlotCache:
    """A thread-safe LRU of rendered plots; two concurrent misses of one key both render (rare,
    and cheaper than holding a lock over a render)."""

    def __init__(self, capacity: int = CACHE_SIZE) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._plots: OrderedDict[Hashable, Plot] = OrderedDict()

    def get(self, key: Hashable, render: Callable[[], bytes], final: bool) -> Plot:
        with self._lock:
            plot = self._plots.get(key)
            if plot is not None:
                self._plots.move_to_end(key)
                return plot
        png = render()
        plot = Plot(png, f'"{hashlib.sha256(png).hexdigest()[:32]}"', final)
        with self._lock:
            self._plots[key] = plot
            self._plots.move_to_end(key)
            while len(self._plots) > self.capacity:
                self._plots.popitem(last=False)
        return plot

    def __len__(self) -> int:
        with self._lock:
            return len(self._plots)


def _title(experiment: Experiment) -> str:
    return f"{experiment.name} ({experiment.id})"


def _not_applicable(kind: str, exc: Exception) -> PlotNotApplicable:
    return PlotNotApplicable(f"the {kind} plot does not apply to this experiment: {exc}", kind=kind)


def _feature(predictor: Any, feature: str | None) -> str:
    """The sigma plot's feature: the one asked for (422 naming the accepted ones), else the first."""
    if predictor.loss != "gaussian_nll":
        raise PlotNotApplicable(
            f"the sigma plot needs a model trained with loss gaussian_nll; this one was trained with {predictor.loss}",
            kind="sigma",
        )
    if predictor.info.is_image:
        raise PlotNotApplicable("the sigma plot needs tabular features; this model reads images", kind="sigma")
    features = list(predictor.info.features)
    if feature is None:
        return features[0]
    if feature not in features:
        msg = f"unknown feature {feature!r}; the features are {', '.join(features)}"
        raise InvalidInputs([{"loc": ["query", "feature"], "msg": msg, "type": "enum", "input": feature}])
    return feature


def experiment_plot(
    session: Session,
    models: ModelCache,
    store: ArtifactStore,
    plots_cache: PlotCache,
    *,
    owner: str,
    experiment_id: str,
    kind: ExperimentPlot,
    feature: str | None = None,
) -> Plot:
    """One plot of an experiment. Learning curves draw the stored epochs (any status, once one
    epoch finished: PlotNotReady before); the others need the succeeded model
    (ExperimentNotFinished) and a model they apply to (PlotNotApplicable)."""
    from ml import plots

    experiment = get_experiment(session, owner, experiment_id)
    if kind == "learning-curves":
        rows = metrics_repo.list_epochs(session, experiment_id)
        if not rows:
            raise PlotNotReady(
                f"experiment {experiment_id} is {experiment.status} and has no finished epoch yet: "
                "there is no learning curve to draw",
                status=experiment.status,
            )
        curves_key = (experiment_id, kind, experiment.status, rows[-1].epoch, rows[-1].id, len(rows))
        final = experiment.status in TERMINAL_STATUSES
        return plots_cache.get(
            curves_key, lambda: plots.learning_curves([epoch_row(r) for r in rows], _title(experiment)), final
        )

    ref = serving_ref(session, owner, experiment_id)
    predictor = cached_model(session, models, store, experiment_id, ref)
    if kind == "sigma":
        feature = _feature(predictor, feature)
    key = (experiment_id, kind, feature if kind == "sigma" else None, ref.artifact_id, ref.created_at, ref.sha256)

    def render() -> bytes:
        dataset = evaluation_dataset(session, experiment, predictor)
        title = _title(experiment)
        try:
            if kind == "decision-boundary":
                return plots.decision_boundary(predictor, dataset, title)
            if kind == "sigma":
                assert feature is not None
                return plots.sigma(predictor, dataset, feature, title)
            return plots.confusion(predictor, dataset, title)
        except plots.PlotError as exc:
            raise _not_applicable(kind, exc) from exc

    return plots_cache.get(key, render, final=True)


def experiment_plot_data(
    session: Session,
    models: ModelCache,
    store: ArtifactStore,
    *,
    owner: str,
    experiment_id: str,
    kind: PlotData,
    feature: str | None = None,
) -> dict[str, Any]:
    """The numbers the decision-boundary or sigma plot draws, computed as the PNG computes them."""
    from ml import plots

    experiment = get_experiment(session, owner, experiment_id)
    ref = serving_ref(session, owner, experiment_id)
    predictor = cached_model(session, models, store, experiment_id, ref)
    if kind == "sigma":
        feature = _feature(predictor, feature)
    dataset = evaluation_dataset(session, experiment, predictor)
    try:
        if kind == "decision-boundary":
            xs, ys, prob = plots.decision_grid(predictor, dataset)
            target = predictor.info.targets[0]
            return {
                "experiment_id": experiment_id,
                "features": list(predictor.info.features),
                "x1": xs.tolist(),
                "x2": ys.tolist(),
                "probability": prob.tolist(),
                "class": (target.classes or [None])[-1],
            }
        assert feature is not None
        inputs, values, mu, sigma = plots.sigma_curve(predictor, dataset, feature)
        return {
            "experiment_id": experiment_id,
            "feature": feature,
            "features": list(predictor.info.features),
            "inputs": inputs.tolist(),
            "values": values.tolist(),
            "mu": mu.tolist(),
            "sigma": sigma.tolist(),
        }
    except plots.PlotError as exc:
        raise _not_applicable(kind, exc) from exc


# -- sweeps ------------------------------------------------------------------------------------


def _invalid_query(name: str, value: str, accepted: list[str]) -> InvalidInputs:
    msg = f"{value!r} is not a column this plot can use; accepted: {', '.join(accepted) or 'none yet'}"
    return InvalidInputs([{"loc": ["query", name], "msg": msg, "type": "enum", "input": value}])


def sweep_compare(
    session: Session,
    plots_cache: PlotCache,
    *,
    owner: str,
    sweep_id: str,
    metric: str | None = None,
    color_by: str | None = None,
) -> Plot:
    """Validation metric against parameter count, one labelled point per table row, colored by a
    table column (default: the first of COLOR_COLUMNS whose value differs between rows)."""
    from ml import plots

    table, read = sweep_table(session, owner, sweep_id)
    metric = metric or table.metric or table.metrics[0]
    if metric not in table.metrics:
        raise _invalid_query("metric", metric, table.metrics)
    colors = [c for c in COLOR_COLUMNS if c in table.columns]
    if color_by is None:
        varying = [c for c in colors if len({json.dumps(r.get(c)) for r in table.rows}) > 1]
        color_by = (varying or colors or ["status"])[0]
    elif color_by not in colors:
        raise _invalid_query("color_by", color_by, colors)
    if not any(r.get(metric) is not None for r in table.rows):
        raise PlotNotReady(
            f"no row of sweep {sweep_id} has {metric} yet (sweep {read.status}); there is nothing to compare",
            status=read.status,
        )
    drawn = [[r["name"], r["par"], r.get(metric), r.get(color_by)] for r in table.rows]
    digest = hashlib.sha256(json.dumps([drawn, read.name], default=str).encode()).hexdigest()
    key = (sweep_id, "compare", metric, color_by, digest)
    title = f"{read.name} ({sweep_id}): {metric} by {color_by}"
    return plots_cache.get(
        key, lambda: plots.compare(table.rows, metric, color_by, title), final=read.status == "finished"
    )
