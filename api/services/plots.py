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
from api.services.sweep_tables import Table, build_table
from api.services.sweeps import get_sweep, sweep_status
from core.artifact_store import ArtifactStore
from core.repositories import datasets as datasets_repo
from core.repositories import experiments as experiments_repo
from core.repositories import metrics as metrics_repo
from core.tables import TERMINAL_STATUSES, Experiment
from ml.plot_format import kept_epoch

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
        # The kept epoch: the served model's once the experiment records it, else the best so far.
        kept = kept_epoch(getattr(experiment, "served_metrics", None), experiment.best_metrics)
        unit = _unit(session, owner, experiment.spec) if experiment.task == "regression" else None
        curves_key = (experiment_id, kind, experiment.status, rows[-1].epoch, rows[-1].id, len(rows), kept, unit)
        final = experiment.status in TERMINAL_STATUSES
        return plots_cache.get(
            curves_key,
            lambda: plots.learning_curves([epoch_row(r) for r in rows], _title(experiment), kept=kept, unit=unit),
            final,
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
            "target": predictor.info.targets[0].name,
            "unit": plots.sigma_wording(predictor, dataset).unit,  # of mu and sigma, as the PNG's axes say
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


def _dimension(param: str, name: str, table: Table, specs: list[dict[str, Any]], swept: list[str]) -> list[Any]:
    """Each table row's value of a compare axis: `parameters` (the count), a table column
    (opt, lr, act, ...) or a dotted spec path read in the row's stored spec. Anything else is a
    422 on `param` that names what is accepted."""
    from ml.sweep_plots import MISSING, PARAMETERS, value_at
    from ml.sweeps import path_problem

    if name == PARAMETERS:
        return [r["par"] for r in table.rows]
    columns = [c for c in COLOR_COLUMNS if c in table.columns]
    if name in columns:
        return [r.get(name) for r in table.rows]
    problem = path_problem(name)
    values = [value_at(spec, name) for spec in specs] if problem is None else []
    if problem is None and any(isinstance(v, dict) for v in values):
        problem = f"{name} is an object of the spec; name one of its values (like {name}.<field>)"
    elif problem is None and all(v is MISSING or v is None for v in values):
        problem = f"no row of this sweep has a value at {name}"
    if problem is None:
        return [None if v is MISSING else v for v in values]
    paths = ", ".join(swept) or "optimizer.lr, model.neurons, ..."
    msg = f"{problem}; accepted: {PARAMETERS}, a table column ({', '.join(columns)}) or a dotted spec path ({paths})"
    raise InvalidInputs([{"loc": ["query", param], "msg": msg, "type": "enum", "input": name}])


def _unit(session: Session, owner: str, spec: dict[str, Any]) -> str | None:
    """The unit of a regression target: USD for house prices, an upload's target column."""
    from ml.plot_format import wording

    dataset = spec.get("dataset", {})
    target = None
    if dataset.get("id") is not None:
        upload = datasets_repo.get(session, dataset["id"], owner)
        targets = list((upload.info or {}).get("targets", {})) if upload is not None else []
        target = targets[0] if len(targets) == 1 else None
    return wording(dataset, target).unit


def sweep_compare(
    session: Session,
    plots_cache: PlotCache,
    *,
    owner: str,
    sweep_id: str,
    metric: str | None = None,
    x: str | None = None,
    color_by: str | None = None,
) -> Plot:
    """The validation metric of every table row (mean ± std over repeats) against `x` (default:
    the swept parameter, ml/sweep_plots.py), coloured by `color_by` (default: the next swept
    one; a table column or a spec path)."""
    from ml import sweep_plots

    sweep = get_sweep(session, owner, sweep_id)
    experiments = experiments_repo.list_in_sweep(session, sweep.id)
    counts: dict[str, int] = {}
    for e in experiments:
        counts[e.status] = counts.get(e.status, 0) + 1
    status = sweep_status(sweep, counts)
    request: dict[str, Any] = sweep.spec.get("request", {})
    table = build_table(sweep.spec.get("members", []), experiments, int(request.get("repeats", 1)))
    metric = metric or table.metric or table.metrics[0]
    if metric not in table.metrics:
        raise _invalid_query("metric", metric, table.metrics)
    by_id = {e.id: e for e in experiments}
    specs = [by_id[r["experiment_ids"][0]].spec for r in table.rows]
    swept = sweep_plots.swept_paths(request)
    default_x, default_color = sweep_plots.default_axes(request, specs)
    x = x or default_x
    xs = _dimension("x", x, table, specs, swept)
    color = color_by or default_color
    colors = _dimension("color_by", color, table, specs, swept) if color else [None] * len(table.rows)
    if not any(r.get(metric) is not None for r in table.rows):
        raise PlotNotReady(
            f"no row of sweep {sweep_id} has {metric} yet (sweep {status}); there is nothing to compare",
            status=status,
        )
    points = [
        sweep_plots.Point(r["name"], xv, r.get(metric), r.get(f"{metric}_std"), cv)
        for r, xv, cv in zip(table.rows, xs, colors, strict=True)
    ]
    options: dict[str, Any] = {
        "x": x,
        "metric": metric,
        "color": color,
        "title": f"{sweep.name} ({sweep_id}): {metric} by {x}",
        "unit": _unit(session, owner, specs[0]) if metric.startswith("val_rmse") and specs else None,
        "repeats": table.repeats,
        "lines": x in (request.get("grid") or {}),
        "annotate": bool(request.get("variants")),
    }
    digest = hashlib.sha256(json.dumps([points, options], default=repr).encode()).hexdigest()

    def render() -> bytes:
        try:
            return sweep_plots.compare(points, **options)
        except sweep_plots.PlotError as exc:  # a table with no usable x: said as the 409 above would
            raise PlotNotReady(f"sweep {sweep_id}: {exc}", status=status) from exc

    return plots_cache.get((sweep_id, "compare", digest), render, final=status == "finished")
