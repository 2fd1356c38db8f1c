"""One run's bookkeeping, shared by the single trainer and the group trainer: its history, best
metrics, early stopping, last finite weights, the kept weights, and the checkpoint and artifact
it produces.

The kept weights are what the run serves (`keep: best`, the default: the best epoch by the one
ranking rule of `ml.ranking`; `keep: last`: the last finite epoch). They are copied only when an
epoch ranks better than every earlier one, and the checkpoint holds them with the ranking state,
so a resumed run keeps exactly the model an uninterrupted one would. Early stopping decides only
when to stop (patience on the validation loss); what is kept is the same rule as without it.

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
from ml.ranking import is_better
from ml.results import EpochResult, RunStatus, TrainResult
from ml.spec import CheckedSpec, ExperimentSpec


def spec_digest(spec: ExperimentSpec) -> str:
    dump = spec.model_dump(mode="json")
    if dump.get("keep") == "best":  # the default: checkpoints written before `keep` existed still resume
        del dump["keep"]
    return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:16]


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
        self.keep_best = self.spec.keep == "best"
        self.norm = norm
        self.epoch = 0
        self.history: list[EpochResult] = []
        self.best: dict[str, float] = {}  # the best epoch by the ranking rule: its metrics, val_loss, epoch
        self.last_good = params.detach().clone()  # weights after the last finite epoch
        self.kept: torch.Tensor | None = None  # keep: best: the best epoch's weights (None before one)
        self.best_val_loss = math.inf  # early stopping's own bookkeeping
        self.bad_epochs = 0

    @property
    def served(self) -> dict[str, float]:
        """The validation metrics of the kept weights (with `val_loss` and `epoch`)."""
        if self.keep_best or not self.history:
            return self.best
        return _metrics_of(self.history[-1])

    def record(self, result: EpochResult, params: torch.Tensor) -> bool:
        """Keep a finite epoch; update the best epoch, the kept weights and early stopping.
        True: time to stop."""
        self.epoch = result.epoch
        self.history.append(result)
        self.last_good.copy_(params)
        metrics = _metrics_of(result)
        if is_better(metrics, self.best):
            self.best = metrics
            if self.keep_best:  # a copy only when the epoch improves
                if self.kept is None:
                    self.kept = params.detach().clone()
                else:
                    self.kept.copy_(params)
        es = self.spec.early_stopping
        if es is None:
            return False
        if result.val_loss < self.best_val_loss - es.min_delta:
            self.best_val_loss = result.val_loss
            self.bad_epochs = 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= es.patience

    def checkpoint(self, params: torch.Tensor, optimizer_state: dict[str, torch.Tensor]) -> bytes:
        tensors = {"params": params, **optimizer_state}
        if self.kept is not None:
            tensors["kept_params"] = self.kept
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
        self.epoch = int(state["epoch"])
        self.best = state["best"]
        self.best_val_loss = state["best_val_loss"] if state["best_val_loss"] is not None else math.inf
        self.bad_epochs = int(state["bad_epochs"])
        self.history = [epoch_from_row(r) for r in state["history"]]
        if "kept_params" in tensors:
            self.kept = tensors["kept_params"].to(device)
        elif self.keep_best and self.history:
            # A checkpoint written before kept weights existed: its best epoch's weights are
            # gone, so the weights it has become the kept ones, and the metrics say so.
            self.kept = tensors["params"].to(device)
            self.best = _metrics_of(self.history[-1])
        return {k: v.to(device) for k, v in tensors.items()}

    def artifact(self, network: Network, flat: torch.Tensor) -> bytes:
        """The artifact of the kept weights, written through `network`, whose parameters are
        views of `flat`."""
        chosen = self.kept if self.kept is not None else self.last_good
        current = flat.clone()
        flat.copy_(chosen)
        try:
            extra = {
                "epochs_done": self.epoch,
                "kept_epoch": int(self.served.get("epoch", self.epoch)),
                "param_count": self.checked.param_count,
                "task": self.checked.task,
            }
            return save_artifact(
                # Tags and notes live beside the spec (the service stores them apart): not in the model.
                network, self.spec.model_dump(mode="json", exclude={"tags", "notes"}), self.checked.info,
                self.norm.to_tensors(), extra,
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
            served=self.served,
        )


def _metrics_of(result: EpochResult) -> dict[str, float]:
    """An epoch as the ranking and `metrics.best`/`served` see it."""
    return {**result.metrics, "val_loss": result.val_loss, "epoch": result.epoch}
