"""Tags and notes of experiments and sweeps: set at submission (the spec's `tags` and `notes`,
stored in their own columns, never in the stored spec) and changed with PATCH.

A sweep's base carries the sweep's tags and notes, and every member's (a row may override its
own). `GET /experiments?tag=x` finds an experiment tagged `x` or in a sweep tagged `x`, so a
tag added to a sweep later finds its members without rewriting them."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from api.errors import ExperimentNotFound, SweepNotFound
from core.repositories import experiments as experiments_repo
from core.repositories import sweeps as sweeps_repo
from core.repositories.tags import annotate
from core.tables import Experiment, Sweep
from ml.spec import Notes, Tags
from ml.sweeps import SweepInvalid

_TAGS: TypeAdapter[list[str]] = TypeAdapter(Tags)
_NOTES: TypeAdapter[str | None] = TypeAdapter(Notes | None)


def base_annotations(base: dict[str, Any]) -> tuple[list[str], str | None]:
    """A sweep's tags and notes: its base's. Checked here too, since a base whose every row
    overrides them is not checked as part of a member."""
    errors: list[dict[str, Any]] = []
    tags: list[str] = []
    notes: str | None = None
    try:
        tags = _TAGS.validate_python(base.get("tags", []))
    except ValidationError as exc:
        errors += [_item(["base", "tags", *e["loc"]], e) for e in exc.errors()]
    try:
        notes = _NOTES.validate_python(base.get("notes"))
    except ValidationError as exc:
        errors += [_item(["base", "notes"], e) for e in exc.errors()[:1]]
    if errors:
        raise SweepInvalid(errors)
    return tags, notes


def _item(loc: list[Any], error: Any) -> dict[str, Any]:
    return {"loc": loc, "msg": str(error["msg"]).removeprefix("Value error, "), "type": error["type"]}


def update_experiment(session: Session, owner: str, experiment_id: str, changes: dict[str, Any]) -> Experiment:
    """Replace the tags and/or notes `changes` names; another owner's experiment is not found."""
    experiment = experiments_repo.get(session, experiment_id, owner)
    if experiment is None:
        raise ExperimentNotFound(f"no experiment with id {experiment_id!r}")
    annotate(session, experiment, changes)
    return experiment


def update_sweep(session: Session, owner: str, sweep_id: str, changes: dict[str, Any]) -> Sweep:
    """Replace the sweep's own tags and/or notes (its members' stay; `?tag=` finds them by the sweep's)."""
    sweep = sweeps_repo.get(session, sweep_id, owner)
    if sweep is None:
        raise SweepNotFound(f"no sweep with id {sweep_id!r}")
    annotate(session, sweep, changes)
    return sweep
