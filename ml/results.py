"""What training hands back to its caller: one record per epoch and the run's outcome."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

RunStatus = Literal["succeeded", "diverged", "cancelled"]


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch. `metrics` holds the validation metrics, in original units:
    `val_accuracy` (single target), `val_accuracy_<target>` per target plus their mean as
    `val_accuracy` (two targets), or `val_rmse` (regression; for gaussian_nll also `val_nll`,
    `val_within_1_sigma` and `val_within_2_sigma`, the shares of targets inside μ ± σ and μ ± 2σ)."""

    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    metrics: dict[str, float]
    seconds: float  # wall time of this epoch (training and validation)

    def as_row(self) -> dict[str, float | int]:
        """Flat form, as the API and CSV show it."""
        row: dict[str, float | int] = {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
        }
        row.update(self.metrics)
        row["seconds"] = self.seconds
        return row


@dataclass
class TrainResult:
    """The outcome of `ml.train.train`. `artifact` is the safetensors blob that `ml.predict`
    loads (weights, spec, normalization statistics); None only when no epoch finished."""

    status: RunStatus
    epochs_done: int
    history: list[EpochResult]
    artifact: bytes | None
    device: str
    param_count: int
    train_seconds: float
    error: str | None = None  # why it diverged
    best: dict[str, float] = field(default_factory=dict)  # best validation metrics (+ "val_loss", "epoch")
    served: dict[str, float] = field(default_factory=dict)  # those of the kept weights (the artifact's)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("artifact")
        d.pop("history")
        return d
