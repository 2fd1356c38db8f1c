"""One run's bookkeeping, shared by the single trainer and the group trainer: its history, best
metrics, early stopping, last finite weights, and the checkpoint and artifact it produces.

Weights are a run's flat parameter vector (`ml.optim.flatten_parameters`): for a group member,
its row of the group's [K, P] buffer. So a member's checkpoint and artifact are byte-for-byte
the same kind as a single run's, and either resumes the other.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import torch

from ml.artifact import read_checkpoint, save_artifact, save_checkpoint
from ml.data import Normalization
from ml.networks import Network
from ml.objective import higher_is_better, main_metric
from ml.results import EpochResult, RunStatus, TrainResult
from ml.spec import CheckedSpec, ExperimentSpec


def spec_digest(spec: ExperimentSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def epoch_from_row(row: dict[str, Any]) -> EpochResult:
    fixed = {"epoch", "train_loss", "val_loss", "seconds"}
    return EpochResult(
        epoch=int(row["epoch"]),
        train_loss=float(row["train_loss"]),
        val_loss=float(row["val_loss"]),
        metrics={k: float(v) for k, v in row.items() if k not in fixed},
        seconds=float(row["seconds"]),
    )


def divergence(train_loss: float, val_loss: float, epochs_done: int) -> str | None:
    """Why an epoch's losses end the run, or None when they are finite."""
    if math.isfinite(train_loss) and math.isfinite(val_loss):
        return None
    kind = "NaN" if math.isnan(train_loss) or math.isnan(val_loss) else "infinite"
    return f"the loss became {kind} in epoch {epochs_done + 1}; the weights and metrics of epoch {epochs_done} are kept"


class RunBook:
    def __init__(self, checked: CheckedSpec, norm: Normalization, params: torch.Tensor) -> None:
        self.checked = checked
        self.spec = checked.spec
        self.norm = norm
        self.epoch = 0
        self.history: list[EpochResult] = []
        self.best: dict[str, float] = {}
        self.last_good = params.detach().clone()  # weights after the last finite epoch
        self.best_params: torch.Tensor | None = None  # early stopping: weights of the best val_loss
        self.best_val_loss = math.inf
        self.bad_epochs = 0

    def record(self, result: EpochResult, params: torch.Tensor) -> bool:
        """Keep a finite epoch; update best metrics and early stopping. True: time to stop."""
        self.epoch = result.epoch
        self.history.append(result)
        self.last_good.copy_(params)
        key = main_metric(result.metrics)
        if key in result.metrics:
            value = result.metrics[key]
            if not self.best or (value > self.best[key] if higher_is_better(key) else value < self.best[key]):
                self.best = {**result.metrics, "val_loss": result.val_loss, "epoch": result.epoch}
        es = self.spec.early_stopping
        if es is None:
            return False
        if result.val_loss < self.best_val_loss - es.min_delta:
            self.best_val_loss = result.val_loss
            self.bad_epochs = 0
            if self.best_params is None:
                self.best_params = params.detach().clone()
            else:
                self.best_params.copy_(params)
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= es.patience

    def checkpoint(self, params: torch.Tensor, optimizer_state: dict[str, torch.Tensor]) -> bytes:
        tensors = {"params": params, **optimizer_state}
        if self.best_params is not None:
            tensors["best_params"] = self.best_params
        state = {
            "epoch": self.epoch,
            "spec": spec_digest(self.spec),
            "best": self.best,
            "best_val_loss": self.best_val_loss if math.isfinite(self.best_val_loss) else None,
            "bad_epochs": self.bad_epochs,
            "history": [h.as_row() for h in self.history],
        }
        return save_checkpoint(tensors, state)

    def restore(self, blob: bytes, device: torch.device) -> dict[str, torch.Tensor]:
        """Take the bookkeeping back from a checkpoint; returns its tensors (params, opt.*)."""
        tensors, state = read_checkpoint(blob)
        if state["spec"] != spec_digest(self.spec):
            raise ValueError("this checkpoint belongs to another spec")
        self.last_good.copy_(tensors["params"])
        if "best_params" in tensors:
            self.best_params = tensors["best_params"].to(device)
        self.epoch = int(state["epoch"])
        self.best = state["best"]
        self.best_val_loss = state["best_val_loss"] if state["best_val_loss"] is not None else math.inf
        self.bad_epochs = int(state["bad_epochs"])
        self.history = [epoch_from_row(r) for r in state["history"]]
        return {k: v.to(device) for k, v in tensors.items()}

    def artifact(self, network: Network, flat: torch.Tensor) -> bytes:
        """The artifact of the last finite epoch's weights (the best epoch's under early
        stopping), written through `network`, whose parameters are views of `flat`."""
        chosen = self.best_params if self.best_params is not None else self.last_good
        current = flat.clone()
        flat.copy_(chosen)
        try:
            extra = {"epochs_done": self.epoch, "param_count": self.checked.param_count, "task": self.checked.task}
            return save_artifact(
                network, self.spec.model_dump(mode="json"), self.checked.info, self.norm.to_tensors(), extra
            )
        finally:
            flat.copy_(current)

    def result(
        self, status: RunStatus, artifact: bytes | None, device: str, seconds: float, error: str | None
    ) -> TrainResult:
        return TrainResult(
            status=status,
            epochs_done=self.epoch,
            history=self.history,
            artifact=artifact,
            device=device,
            param_count=self.checked.param_count,
            train_seconds=seconds,
            error=error,
            best=self.best,
        )
