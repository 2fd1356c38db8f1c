"""The sweeps resource: submit, list, read, change tags and notes, cancel, and the study table."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Header, Path, Query, Response, status
from fastapi.openapi.models import Example
from fastapi.responses import PlainTextResponse

from api.deps import CeleryDep, OwnerDep, SettingsDep, UowDep
from api.schemas import SweepPage, SweepRead, SweepTableRead, SweepUpdate
from api.services import sweep_tables, tagging
from api.services import sweeps as service
from ml.spec import MAX_TAGS, Tag
from ml.sweeps import SweepRequest

router = APIRouter(prefix="/sweeps", tags=["sweeps"])

SweepId = Annotated[str, Path(min_length=1, max_length=64, description="the sweep's id")]
ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "no such sweep (`SweepNotFound`)"}}

_BASE: dict[str, Any] = {
    "dataset": {"name": "spirals", "params": {"n_samples": 1000, "noise": 0.1}, "seed": 0},
    "model": {"type": "mlp", "hidden_layers": 2, "neurons": 16, "activation": "relu"},
    "loss": "mse",
    "optimizer": {"name": "sgd", "lr": 0.01},
    "batch_size": 10,
    "epochs": 200,
}
EXAMPLES: dict[str, Example] = {
    "variants": {
        "summary": "rows of the report's Table 1, each a name and dotted-path overrides of the base",
        "value": {
            "name": "table1-excerpt",
            "base": _BASE,
            "variants": [
                {"name": "model4"},
                {"name": "model7", "model.activation": "sigmoid"},
                {"name": "model19", "optimizer.name": "adam", "epochs": 100},
            ],
        },
    },
    "grid": {
        "summary": "the cartesian product of depth and width, each trained with 3 seeds",
        "value": {
            "name": "depth-width",
            "base": _BASE,
            "grid": {"model.hidden_layers": [1, 2, 3], "model.neurons": [8, 16]},
            "repeats": 3,
        },
    },
    "random": {
        "summary": "12 seeded draws of learning rate and batch size",
        "value": {
            "name": "lr-search",
            "base": _BASE,
            "random": {
                "samples": 12,
                "seed": 0,
                "space": {"optimizer.lr": {"log_uniform": [0.001, 0.3]}, "batch_size": {"choice": [10, 32, 128]}},
            },
        },
    },
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"description": "an earlier request with the same Idempotency-Key created this sweep"},
        409: {"description": "the Idempotency-Key was used with a different request"},
        422: {"description": "a row is invalid (`errors` names the row and the field), or the sweep is too large"},
    },
)
def create_sweep(
    uow: UowDep,
    celery: CeleryDep,
    settings: SettingsDep,
    owner: OwnerDep,
    response: Response,
    request: Annotated[SweepRequest, Body(openapi_examples=EXAMPLES)],
    idempotency_key: Annotated[
        str | None,
        Header(max_length=190, description="repeat a request safely: the same key returns the same sweep"),
    ] = None,
) -> SweepRead:
    """Submit a sweep: every row is validated, then all its experiments are queued at once."""
    sweep, created = service.create_sweep(
        uow, celery, settings, owner=owner, request=request, idempotency_key=idempotency_key
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/sweeps/{sweep.id}"
    return service.read_sweep(uow.session, owner, sweep.id)


@router.get("", responses={400: {"description": "the cursor is not one this API returned"}})
def list_sweeps(
    uow: UowDep,
    owner: OwnerDep,
    tag: Annotated[
        list[Tag] | None,
        Query(max_length=MAX_TAGS, description="only sweeps carrying this tag; repeat it for all of several tags"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="page size")] = 20,
    cursor: Annotated[str | None, Query(max_length=500, description="the next_cursor of the previous page")] = None,
) -> SweepPage:
    """List sweeps, newest first, a page at a time."""
    items, next_cursor = service.list_sweeps(uow.session, owner, limit=limit, cursor=cursor, tags=tag)
    return SweepPage(items=items, next_cursor=next_cursor)


@router.get("/{sweep_id}", responses=ERRORS)
def read_sweep(uow: UowDep, owner: OwnerDep, sweep_id: SweepId) -> SweepRead:
    """Read a sweep: its status, its members counted by status, and their ids."""
    return service.read_sweep(uow.session, owner, sweep_id)


@router.patch("/{sweep_id}", responses=ERRORS)
def update_sweep(uow: UowDep, owner: OwnerDep, sweep_id: SweepId, changes: SweepUpdate) -> SweepRead:
    """Change a sweep's own tags and/or notes (its members keep theirs; `?tag=` finds them by the sweep's)."""
    sweep = tagging.update_sweep(uow.session, owner, sweep_id, changes.model_dump(exclude_unset=True))
    return service.read_sweep(uow.session, owner, sweep.id)


@router.post(
    "/{sweep_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**ERRORS, 409: {"description": "every member already ended (`SweepFinished`)"}},
)
def cancel_sweep(uow: UowDep, owner: OwnerDep, sweep_id: SweepId) -> SweepRead:
    """Cancel a sweep: queued members at once, running ones at their next epoch boundary."""
    return service.cancel_sweep(uow, owner, sweep_id)


@router.get(
    "/{sweep_id}/table",
    response_model=SweepTableRead,
    responses={
        **ERRORS,
        200: {"content": {"text/csv": {}, "text/markdown": {}}, "description": "JSON, CSV or aligned markdown"},
    },
)
def read_sweep_table(
    uow: UowDep,
    owner: OwnerDep,
    sweep_id: SweepId,
    format: Annotated[  # noqa: A002
        Literal["json", "csv", "markdown"], Query(description="json, csv (a header row) or markdown (aligned)")
    ] = "json",
) -> SweepTableRead | PlainTextResponse:
    """Read the study table: the report's columns, validation metrics, the best row marked."""
    table, read = service.sweep_table(uow.session, owner, sweep_id)
    if format == "csv":
        return PlainTextResponse(
            sweep_tables.table_csv(table),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="sweep-{sweep_id}.csv"'},
        )
    if format == "markdown":
        return PlainTextResponse(sweep_tables.table_markdown(table), media_type="text/markdown")
    return read
