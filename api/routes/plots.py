"""Plots as PNG: an experiment's learning curves, decision boundary, σ curve and confusion
matrices, and a sweep's metric against its swept parameter. Rendered in the API process (a sync
route: matplotlib runs in the threadpool, off the event loop), cached, with an ETag."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from api.deps import OwnerDep, UowDep
from api.model_cache import ModelCacheDep
from api.routes.experiments import ERRORS, ExperimentId
from api.routes.predictions import NOT_SUCCEEDED, ArtifactStoreDep
from api.routes.sweeps import SweepId
from api.services import plots as service

router = APIRouter(tags=["plots"])


async def get_plot_cache(request: Request) -> service.PlotCache:
    # async: runs on the event loop, so the first request creates the cache exactly once
    cache = getattr(request.app.state, "plot_cache", None)
    if cache is None:
        cache = request.app.state.plot_cache = service.PlotCache()
    return cache


PlotCacheDep = Annotated[service.PlotCache, Depends(get_plot_cache)]
IfNoneMatch = Annotated[str | None, Header(description="an ETag of this plot: 304 when it is unchanged")]
Feature = Annotated[
    str | None,
    Query(max_length=200, description="sigma: the input feature on the x axis (default: the first feature)"),
]

PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "the picture, with an ETag"},
    304: {"description": "If-None-Match named the current ETag"},
}
PLOT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    **NOT_SUCCEEDED,
    409: {
        "description": "a model plot of an experiment that has not succeeded (`ExperimentNotFinished`), or learning "
        "curves before the first epoch finished (`PlotNotReady`); `status` says where it is"
    },
    422: {
        "description": "the plot does not apply to this experiment (`PlotNotApplicable`: a decision boundary of "
        "images or of more than 2 features, σ of a model not trained with gaussian_nll, a confusion matrix of a "
        "regression), or an unknown `feature` (the accepted ones are named)"
    },
}


def _png(plot: service.Plot, if_none_match: str | None) -> Response:
    cache_control = "private, max-age=86400" if plot.final else "no-cache"
    headers = {"ETag": plot.etag, "Cache-Control": cache_control}
    if if_none_match is not None and plot.etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(plot.png, media_type="image/png", headers=headers)


@router.get("/experiments/{experiment_id}/plots/{kind}.png", response_class=Response, responses={**PNG, **PLOT_ERRORS})
def read_experiment_plot(
    uow: UowDep,
    owner: OwnerDep,
    models: ModelCacheDep,
    store: ArtifactStoreDep,
    plots_cache: PlotCacheDep,
    experiment_id: ExperimentId,
    kind: Annotated[service.ExperimentPlot, Path(description="which picture")],
    feature: Feature = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Draw a plot of the experiment as PNG: learning-curves, decision-boundary, sigma or confusion."""
    plot = service.experiment_plot(
        uow.session, models, store, plots_cache, owner=owner, experiment_id=experiment_id, kind=kind, feature=feature
    )
    return _png(plot, if_none_match)


@router.get("/experiments/{experiment_id}/plots/{kind}.json", responses=PLOT_ERRORS)
def read_experiment_plot_data(
    uow: UowDep,
    owner: OwnerDep,
    models: ModelCacheDep,
    store: ArtifactStoreDep,
    experiment_id: ExperimentId,
    kind: Annotated[service.PlotData, Path(description="which picture's numbers")],
    feature: Feature = None,
) -> dict[str, Any]:
    """The numbers a plot draws: the decision-boundary grid (`x1`, `x2`, `probability[i][j]` at
    (x1[j], x2[i]) of the last class) or the sigma curve (`inputs`, `values`, `mu`, `sigma`)."""
    return service.experiment_plot_data(
        uow.session, models, store, owner=owner, experiment_id=experiment_id, kind=kind, feature=feature
    )


@router.get(
    "/sweeps/{sweep_id}/plots/compare.png",
    response_class=Response,
    responses={
        **PNG,
        404: {"description": "no such sweep (`SweepNotFound`)"},
        409: {"description": "no row has the metric yet (`PlotNotReady`)"},
        422: {
            "description": "`metric` is not a metric of this sweep's table, or `x` or `color_by` names no value of its "
            "rows (the accepted are named)"
        },
    },
)
def read_sweep_compare_plot(
    uow: UowDep,
    owner: OwnerDep,
    plots_cache: PlotCacheDep,
    sweep_id: SweepId,
    metric: Annotated[
        str | None, Query(max_length=100, description="a validation metric column (default: the table's ranking one)")
    ] = None,
    x: Annotated[
        str | None,
        Query(
            max_length=200,
            description="the x axis: `parameters`, a dotted spec path (optimizer.lr, model.neurons, ...) or a table "
            "column (default: the swept parameter; the parameter count for variants that change several)",
        ),
    ] = None,
    color_by: Annotated[
        str | None,
        Query(
            max_length=200,
            description="the colour: a table column (opt, lr, bs, ep, hidlay, neur, act, loss, ...) or a dotted spec "
            "path (default: the next swept parameter); dropped when it has one value",
        ),
    ] = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Draw the sweep's validation metric (mean ± std over repeats) against the swept parameter, as PNG."""
    plot = service.sweep_compare(
        uow.session, plots_cache, owner=owner, sweep_id=sweep_id, metric=metric, x=x, color_by=color_by
    )
    return _png(plot, if_none_match)
