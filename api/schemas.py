"""What the API speaks (pydantic), built from ORM rows; the names are DESIGN.md's contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.tables import EpochMetric, Evaluation, Experiment
from ml.spec import Notes, Tags

Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "diverged"]


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class ExperimentMetrics(BaseModel):
    latest: dict[str, Any] | None = Field(None, description="validation metrics of the last epoch (with `epoch`)")
    best: dict[str, Any] | None = Field(
        None, description="the best validation metrics so far by the ranking rule (with `epoch`)"
    )
    served: dict[str, Any] | None = Field(
        None,
        description="the validation metrics of the kept weights (spec `keep`), the model that predictions, "
        "evaluations, plots and the download use (with `epoch`)",
    )


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
    queue_position: int | None = Field(
        None, description="while queued: how many experiments are queued ahead of it on its queue"
    )
    train_seconds: float | None = Field(description="training time measured inside the worker")
    tags: list[str] = Field(default_factory=list, description="its own tags (a sweep's tags also match `?tag=`)")
    notes: str | None = None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None

    @classmethod
    def from_row(cls, row: Experiment, *, queue_position: int | None = None) -> ExperimentRead:
        return cls(
            id=row.id,
            name=row.name,
            status=row.status,  # type: ignore[arg-type]
            spec=row.spec,
            task=row.task,
            param_count=row.param_count,
            epochs_done=row.epochs_done,
            metrics=ExperimentMetrics(latest=row.latest_metrics, best=row.best_metrics, served=row.served_metrics),
            test_evaluations=row.test_evaluations,
            error=row.error,
            sweep_id=row.sweep_id,
            device=row.device,
            queue=row.queue,
            worker=row.worker,
            attempt=row.attempt,
            cancel_requested=row.cancel_requested,
            train_seconds=row.train_seconds,
            queue_position=queue_position if row.status == "queued" else None,
            tags=row.tags,
            notes=row.notes,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


class ExperimentUpdate(BaseModel):
    """`PATCH /experiments/{id}`: each field given replaces the stored one; a field left out stays."""

    model_config = ConfigDict(extra="forbid")

    tags: Tags = Field(default_factory=list, description="the new tags, all of them (`[]` removes every tag)")
    notes: Notes | None = Field(None, description="the new notes (`null` removes them)")


class ExperimentPage(BaseModel):
    items: list[ExperimentRead]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


def epoch_row(row: EpochMetric) -> dict[str, Any]:
    """One epoch, flat: epoch, train_loss, val_loss, the task's metrics, seconds."""
    return {
        "epoch": row.epoch,
        "train_loss": row.train_loss,
        "val_loss": row.val_loss,
        **row.metrics,
        "seconds": row.seconds,
    }


class MetricsRead(BaseModel):
    epochs: list[dict[str, Any]] = Field(
        description='one object per epoch: {"epoch", "train_loss", "val_loss", "val_accuracy" or "val_rmse", "seconds"}'
    )


class ReadinessRead(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]


# -- predictions, evaluations ----------------------------------------------------------------


class PredictionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Any] = Field(
        description="rows in the dataset's original units: tabular rows as lists of numbers in feature order or "
        "objects keyed by feature name; images as [C][H][W] (or [H][W] for one channel) nested lists"
    )


class PredictionRead(BaseModel):
    experiment_id: str
    predictions: list[dict[str, Any]] = Field(
        description='one per input row: {"label", "probabilities"} (classification), {"digit": {...}, "color": '
        '{...}} (two targets), {"value"} (mse regression), {"mu", "sigma"} (gaussian_nll), in original units'
    )


class EvaluationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["test", "val"] = Field("test", description="test (counted on the experiment) or val")


class EvaluationRead(BaseModel):
    id: int
    experiment_id: str
    split: Literal["test", "val"]
    metrics: dict[str, float | int | None] = Field(
        description="in original units: accuracy (per target for two targets), rmse; for gaussian_nll also nll, "
        "within_1_sigma, within_2_sigma (shares of targets inside μ ± σ, μ ± 2σ), mean_sigma; rows"
    )
    created_at: UtcDatetime

    @classmethod
    def from_row(cls, row: Evaluation) -> EvaluationRead:
        return cls(
            id=row.id,
            experiment_id=row.experiment_id,
            split=row.split,  # type: ignore[arg-type]
            metrics=row.metrics,
            created_at=row.created_at,
        )


class EvaluationResult(EvaluationRead):
    test_evaluations: int = Field(description="how many times the experiment's test split has been evaluated, now")


class EvaluationPage(BaseModel):
    items: list[EvaluationRead] = Field(description="oldest first")


# -- sweeps ----------------------------------------------------------------------------------

SweepStatus = Literal["running", "finished", "cancelled"]


class SweepMemberRead(BaseModel):
    experiment_id: str
    name: str = Field(description="its row's name (every repeat of a row has it)")
    row: int = Field(description="the row's position in the sweep, from 0")
    repeat: int = Field(description="which repeat of its row, from 0 (seed = the row's seed + repeat)")


class SweepRead(BaseModel):
    id: str
    name: str
    status: SweepStatus = Field(description="running until every member ended, then finished; cancelled once cancelled")
    counts: dict[str, int] = Field(description="members by status (only statuses that occur)")
    size: int = Field(description="how many experiments the sweep trains (rows × repeats)")
    repeats: int
    experiment_ids: list[str] = Field(description="the members, in sweep order (rows in order, repeats together)")
    members: list[SweepMemberRead]
    request: dict[str, Any] = Field(description="the request as accepted (base and variants, grid or random)")
    tags: list[str] = Field(default_factory=list, description="its tags: `GET /experiments?tag=` finds its members too")
    notes: str | None = None
    created_at: UtcDatetime


class SweepUpdate(ExperimentUpdate):
    """`PATCH /sweeps/{id}`: the sweep's own tags and notes (its members' stay as they are)."""


class SweepPage(BaseModel):
    items: list[SweepRead]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class SweepTableRead(BaseModel):
    sweep_id: str
    name: str
    status: SweepStatus
    metric: str | None = Field(description="the column that ranks rows (val_accuracy: higher, val_rmse: lower)")
    columns: list[str] = Field(description="the columns of the csv and markdown renderings, in order")
    rows: list[dict[str, Any]] = Field(
        description='one per row name: {"name", "opt", "lr", "bs", "ep", ["convlay", "ks",] "hidlay", "neur", "act", '
        '"loss", "par", "val_accuracy" (per target too for two targets) or "val_rmse", with repeats '
        '"<metric>_mean" and "<metric>_std", "kept" (the weights the metrics are of: best or last), "n", "status", '
        '"best", "test_evaluations", "experiment_ids"}'
    )


class DatasetRead(BaseModel):
    """A built-in (by `name`) or an upload (by `id`, its `dataset.id` in a spec), with its schema."""

    id: str | None = Field(None, description="an upload's id, to use as `dataset.id`; none for a built-in")
    name: str
    kind: Literal["builtin", "upload"]
    format: Literal["csv", "npz"] | None = Field(None, description="an upload's file format")
    task: str = Field(description="binary, multiclass, multi_target or regression")
    input_shape: list[int] = Field(description="(features,) for tabular data, (C, H, W) for images")
    features: list[str] = Field(description="feature names in input order (channel names for images)")
    targets: dict[str, list[str] | None] = Field(description="classes per target; null for a regression target")
    n_samples: int
    sizes: dict[str, int] = Field(description="rows of train, val and test under the default split (0.2, 0.2)")
    params: dict[str, Any] | None = Field(None, description="a built-in's default parameters")
    description: str
    size_bytes: int | None = Field(None, description="an upload's file size")
    created_at: UtcDatetime | None = None


class DatasetPage(BaseModel):
    items: list[DatasetRead] = Field(description="the built-ins, then this owner's uploads, newest first")
