"""Serving a succeeded experiment's model: predictions, evaluations, and the model file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response, status
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.deps import OwnerDep, UowDep
from api.model_cache import ModelCacheDep
from api.routes.experiments import ERRORS, ExperimentId
from api.schemas import (
    EvaluationCreate,
    EvaluationPage,
    EvaluationRead,
    EvaluationResult,
    PredictionCreate,
    PredictionRead,
)
from api.services import predictions as service
from core.artifact_store import ArtifactStore

router = APIRouter(prefix="/experiments", tags=["predictions"])


async def get_artifact_store(request: Request) -> ArtifactStore:
    # async: an attribute read runs on the event loop; a sync dependency costs a threadpool hop
    return request.app.state.artifact_store


ArtifactStoreDep = Annotated[ArtifactStore, Depends(get_artifact_store)]

NOT_SUCCEEDED: dict[int | str, dict[str, Any]] = {
    409: {"description": "the experiment has not succeeded (`ExperimentNotFinished`; `status` says where it is)"},
    503: {"description": "its stored model cannot be read by this API process (`ModelUnavailable`)"},
}
PREDICTION_EXAMPLES: dict[str, Any] = {
    "rows": {"summary": "tabular rows in feature order (spirals: x1, x2)", "value": {"inputs": [[0.5, -0.25]]}},
    "objects": {"summary": "tabular rows keyed by feature name", "value": {"inputs": [{"x1": 0.5, "x2": -0.25}]}},
}


@router.post(
    "/{experiment_id}/predictions",
    responses={
        **ERRORS,
        **NOT_SUCCEEDED,
        422: {
            "description": "an input row does not fit the model (`errors[].loc` is `body.inputs.<row>`), "
            "no rows, or more than LABTRAIN_MAX_PREDICTION_ROWS"
        },
    },
)
async def create_predictions(
    request: Request,
    owner: OwnerDep,
    experiment_id: ExperimentId,
    body: Annotated[PredictionCreate, Body(openapi_examples=PREDICTION_EXAMPLES)],
) -> PredictionRead:
    """Predict with the experiment's trained model: one answer per input row, in the dataset's units."""
    # The serving fast path. The app's objects are read from its state here rather than through
    # dependencies (each one FastAPI solves per request costs more than the attribute read), and
    # the request's blocking work (the model's one query, a load on a miss, the forward pass) is
    # ONE threadpool call with a session of its own, opened and closed there. It never waits on
    # another thread while holding its connection, so it needs no slot of the unit of work's
    # limit (api/deps.py). bench/serving.py measures it.
    state = request.app.state
    with state.metrics.prediction_seconds.time():  # failures too: a slow 422 is latency a client sees
        predictions = await run_in_threadpool(
            service.predict_in_session,
            state.sessionmaker,
            state.model_cache,
            state.artifact_store,
            state.settings,
            owner=owner,
            experiment_id=experiment_id,
            inputs=body.inputs,
        )
    return PredictionRead(experiment_id=experiment_id, predictions=predictions)


@router.post(
    "/{experiment_id}/evaluations",
    status_code=status.HTTP_201_CREATED,
    responses={
        **ERRORS,
        **NOT_SUCCEEDED,
        409: {
            "description": "not succeeded (`ExperimentNotFinished`), or its uploaded dataset cannot be read "
            "again (`DatasetUnavailable`)"
        },
        422: {"description": "split is not `test` or `val`, or that split is empty"},
    },
)
def create_evaluation(
    uow: UowDep,
    owner: OwnerDep,
    cache: ModelCacheDep,
    store: ArtifactStoreDep,
    experiment_id: ExperimentId,
    body: Annotated[
        EvaluationCreate | None,
        Body(openapi_examples={"test": {"summary": "the test split (counted)", "value": {"split": "test"}}}),
    ] = None,
) -> EvaluationResult:
    """Evaluate the trained model on its test (or val) split, in original units; each test look is counted."""
    split = (body or EvaluationCreate()).split
    evaluation, count = service.evaluate(
        uow.session, cache, store, owner=owner, experiment_id=experiment_id, split=split
    )
    return EvaluationResult(**EvaluationRead.from_row(evaluation).model_dump(), test_evaluations=count)


@router.get("/{experiment_id}/evaluations", responses=ERRORS)
def list_evaluations(uow: UowDep, owner: OwnerDep, experiment_id: ExperimentId) -> EvaluationPage:
    """List the experiment's evaluations, oldest first."""
    rows = service.list_evaluations(uow.session, owner, experiment_id)
    return EvaluationPage(items=[EvaluationRead.from_row(r) for r in rows])


def _filename(name: str, experiment_id: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:80]
    return f"{slug}-{experiment_id}.safetensors" if slug else f"{experiment_id}.safetensors"


@router.get(
    "/{experiment_id}/model",
    response_class=Response,
    responses={
        **ERRORS,
        **NOT_SUCCEEDED,
        200: {
            "content": {"application/octet-stream": {}},
            "description": "safetensors: the weights, with the spec, the dataset's description and the "
            "normalization statistics in its header; `ml.predict.load_predictor(blob)` rebuilds the model",
        },
    },
)
def read_model(uow: UowDep, owner: OwnerDep, store: ArtifactStoreDep, experiment_id: ExperimentId) -> Response:
    """Download the trained model (safetensors) with its spec and normalization statistics."""
    experiment, artifact, blob = service.read_model(uow.session, store, owner=owner, experiment_id=experiment_id)
    headers = {"Content-Disposition": f'attachment; filename="{_filename(experiment.name, experiment.id)}"'}
    if artifact.sha256:
        headers["ETag"] = f'"{artifact.sha256}"'
    if isinstance(blob, Path):
        return FileResponse(blob, media_type="application/octet-stream", headers=headers)
    return Response(blob, media_type="application/octet-stream", headers=headers)
