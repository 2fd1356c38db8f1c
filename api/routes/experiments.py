"""The experiments resource: submit, list, read, change tags and notes, metrics, cancel."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Response, status
from fastapi.responses import PlainTextResponse

from api.deps import CeleryDep, OwnerDep, SettingsDep, UowDep
from api.schemas import ExperimentPage, ExperimentRead, ExperimentUpdate, MetricsRead, Status
from api.services import experiments as service
from api.services import tagging
from ml.spec import EXAMPLE_SPEC, MAX_TAGS, ExperimentSpec, Tag

router = APIRouter(prefix="/experiments", tags=["experiments"])

ExperimentId = Annotated[str, Path(min_length=1, max_length=64, description="the experiment's id")]
ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "no such experiment (`ExperimentNotFound`)"}}
TagFilter = Annotated[
    list[Tag] | None,
    Query(
        max_length=MAX_TAGS,
        description="only those carrying this tag (their own or their sweep's); repeat it for all of several tags",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"description": "an earlier request with the same Idempotency-Key created this experiment"},
        409: {"description": "the Idempotency-Key was used with a different spec"},
        422: {"description": "the spec is invalid; `errors` names each field path"},
    },
)
def create_experiment(
    uow: UowDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    response: Response,
    spec: Annotated[
        ExperimentSpec,
        Body(
            openapi_examples={
                "model22": {"summary": "the report's model22 (spirals, 3×8 ReLU MLP)", "value": EXAMPLE_SPEC}
            }
        ),
    ],
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="repeat a request safely: the same key returns the same experiment"),
    ] = None,
) -> ExperimentRead:
    """Submit an experiment spec; it is validated, stored as `queued` and sent to a worker."""
    experiment, created = service.create_experiment(
        uow, celery, settings, owner=owner, spec=spec, idempotency_key=idempotency_key
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/experiments/{experiment.id}"
    return ExperimentRead.from_row(experiment, queue_position=service.queue_position(uow.session, experiment))


@router.get("", responses={400: {"description": "the cursor is not one this API returned"}})
def list_experiments(
    uow: UowDep,
    owner: OwnerDep,
    status_: Annotated[Status | None, Query(alias="status", description="only experiments in this status")] = None,
    sweep_id: Annotated[str | None, Query(max_length=64, description="only the members of this sweep")] = None,
    tag: TagFilter = None,
    limit: Annotated[int, Query(ge=1, le=200, description="page size")] = 50,
    cursor: Annotated[str | None, Query(max_length=500, description="the next_cursor of the previous page")] = None,
) -> ExperimentPage:
    """List experiments, newest first, a page at a time."""
    rows, next_cursor = service.list_experiments(
        uow.session, owner, limit=limit, status=status_, sweep_id=sweep_id, cursor=cursor, tags=tag
    )
    return ExperimentPage(items=[ExperimentRead.from_row(r) for r in rows], next_cursor=next_cursor)


@router.get("/{experiment_id}", responses=ERRORS)
def read_experiment(uow: UowDep, owner: OwnerDep, experiment_id: ExperimentId) -> ExperimentRead:
    """Read an experiment: its spec, status, progress, metrics and timings."""
    experiment = service.get_experiment(uow.session, owner, experiment_id)
    return ExperimentRead.from_row(experiment, queue_position=service.queue_position(uow.session, experiment))


@router.patch("/{experiment_id}", responses=ERRORS)
def update_experiment(
    uow: UowDep, owner: OwnerDep, experiment_id: ExperimentId, changes: ExperimentUpdate
) -> ExperimentRead:
    """Change an experiment's tags and/or notes (a field left out stays as it is)."""
    experiment = tagging.update_experiment(uow.session, owner, experiment_id, changes.model_dump(exclude_unset=True))
    return ExperimentRead.from_row(experiment, queue_position=service.queue_position(uow.session, experiment))


@router.get(
    "/{experiment_id}/metrics",
    response_model=MetricsRead,
    responses={**ERRORS, 200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with `?format=csv`"}},
)
def read_metrics(
    uow: UowDep,
    owner: OwnerDep,
    experiment_id: ExperimentId,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv (with a header row)")] = "json",  # noqa: A002
) -> MetricsRead | PlainTextResponse:
    """Read the metrics of every finished epoch, as JSON or CSV."""
    rows = service.read_metrics(uow.session, owner, experiment_id)
    if format == "csv":
        return PlainTextResponse(
            service.metrics_csv(rows),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{experiment_id}-metrics.csv"'},
        )
    return MetricsRead(epochs=rows)


@router.post(
    "/{experiment_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**ERRORS, 409: {"description": "the experiment already ended (`ExperimentFinished`)"}},
)
def cancel_experiment(uow: UowDep, owner: OwnerDep, experiment_id: ExperimentId) -> ExperimentRead:
    """Cancel an experiment: at once if queued, at the next epoch boundary if running."""
    return ExperimentRead.from_row(service.cancel_experiment(uow, owner, experiment_id))
