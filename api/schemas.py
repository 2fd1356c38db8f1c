"""What the API speaks (pydantic), built from ORM rows; the names are DESIGN.md's contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.tables import EpochMetric, Experiment

Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "diverged"]


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class ExperimentMetrics(BaseModel):
    latest: dict[str, Any] | None = Field(None, description="validation metrics of the last epoch (with `epoch`)")
    best: dict[str, Any] | None = Field(None, description="the best validation metrics so far (with `epoch`)")


class ExperimentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: Status
    spec: dict[str, Any] = Field(description="the normalized spec, every default filled")
    task: str
    param_count: int
    epochs_done: int
    metrics: ExperimentMetrics
    test_evaluations: int
    error: str | None
    sweep_id: str | None
    device: str | None = Field(description="the device the run used (`cpu`, `cuda`), once known")
    queue: str
    worker: str | None = Field(description="the worker that holds or held it")
    attempt: int = Field(description="how many times a worker claimed it (more than 1: resumed)")
    cancel_requested: bool
    train_seconds: float | None = Field(description="training time measured inside the worker")
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None

    @classmethod
    def from_row(cls, row: Experiment) -> ExperimentRead:
        return cls(
            id=row.id,
            name=row.name,
            status=row.status,  # type: ignore[arg-type]
            spec=row.spec,
            task=row.task,
            param_count=row.param_count,
            epochs_done=row.epochs_done,
            metrics=ExperimentMetrics(latest=row.latest_metrics, best=row.best_metrics),
            test_evaluations=row.test_evaluations,
            error=row.error,
            sweep_id=row.sweep_id,
            device=row.device,
            queue=row.queue,
            worker=row.worker,
            attempt=row.attempt,
            cancel_requested=row.cancel_requested,
            train_seconds=row.train_seconds,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


class ExperimentPage(BaseModel):
    items: list[ExperimentRead]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


def epoch_row(row: EpochMetric) -> dict[str, Any]:
    """One epoch, flat: epoch, train_loss, val_loss, the task's metrics, seconds."""
    return {"epoch": row.epoch, "train_loss": row.train_loss, "val_loss": row.val_loss, **row.metrics,
            "seconds": row.seconds}


class MetricsRead(BaseModel):
    epochs: list[dict[str, Any]] = Field(
        description='one object per epoch: {"epoch", "train_loss", "val_loss", "val_accuracy" or "val_rmse", "seconds"}'
    )


class ReadinessRead(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]
