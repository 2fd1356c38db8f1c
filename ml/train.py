"""Training: one linear loop over epochs, the whole split as tensors on the device.

    result = train(spec, on_epoch=print)

Each epoch shuffles the training rows with a permutation seeded by (seed, epoch), takes
mini-batches as slices, and ends with a validation pass. A NaN or infinite loss stops the run
as `diverged` with the last finite weights; `should_stop()` ends it as `cancelled` at an epoch
boundary; `on_checkpoint(blob, epoch)` receives a checkpoint from which `resume_from=blob`
continues exactly as if nothing had stopped (the shuffle depends only on seed and epoch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ml import fastmlp
from ml.artifact import read_checkpoint, save_artifact, save_checkpoint
from ml.data import Split, load_dataset, prepare
from ml.datasets import Dataset
from ml.layers import Conv
from ml.networks import Network, build_network
from ml.objective import Objective, higher_is_better, main_metric
from ml.optim import FlatOptimizer, flatten_parameters
from ml.results import EpochResult, TrainResult
from ml.spec import CheckedSpec, ExperimentSpec, validate_spec

EVAL_CHUNK = 8192  # validation rows per forward pass
CORES = torch.get_num_threads()  # PyTorch's own choice, read before any run changes it


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but no CUDA device is available to this worker")
        return torch.device("cuda")
    return torch.device("cpu")


def default_threads(param_count: int, has_conv: bool) -> int:
    """Small models run fastest on one thread: a step is overhead, not arithmetic, and worker
    processes share the cores (measured in bench/README.md: the report's CNN ran 5x slower on
    two threads beside another busy process). Large models use the cores."""
    limit = 200_000 if not has_conv else 1_000_000
    return 1 if param_count <= limit else CORES


def checkpoint_epoch(blob: bytes) -> int:
    """The last epoch a checkpoint holds."""
    return int(read_checkpoint(blob)[1]["epoch"])


def spec_digest(spec: ExperimentSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The training order of an epoch: a function of (seed, epoch) only, so a resumed run
    shuffles exactly as an uninterrupted one."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g).to(device)


class Trainer:
    """The state of one run: network, optimizer, data, bookkeeping."""

    def __init__(self, checked: CheckedSpec, dataset: Dataset, device: torch.device) -> None:
        spec = checked.spec
        self.checked = checked
        self.spec = spec
        self.device = device
        self.norm, splits = prepare(spec, dataset, device)
        self.train_split: Split = splits["train"]
        self.val_split: Split = splits["val"]
        self.network: Network = build_network(checked.plan, seed=spec.seed).to(device)
        self.params, self.grads = flatten_parameters(self.network)
        self.optimizer = FlatOptimizer(spec.optimizer, self.params)
        self.objective = Objective(checked.info, spec.loss or "mse", self.norm.y_std)
        n = len(self.train_split)
        self.batch = n if spec.batch_size == "full" else min(int(spec.batch_size), n)
        self.fast = (
            fastmlp.FastMLP(self.network, checked.info, spec.loss or "mse")
            if fastmlp.supports(self.network, checked.info, spec.loss or "mse")
            else None
        )
        self.epoch = 0
        self.history: list[EpochResult] = []
        self.best: dict[str, float] = {}
        self.last_good = self.params.clone()  # weights after the last finite epoch
        self.best_params: torch.Tensor | None = None  # early stopping: weights of the best val_loss
        self.best_val_loss = math.inf
        self.bad_epochs = 0

    # -- one epoch ---------------------------------------------------------------------------

    def train_epoch(self) -> float:
        """One pass over the training rows; the mean training loss (NaN if it diverged)."""
        split, batch = self.train_split, self.batch
        n = len(split)
        order = permutation(n, self.spec.seed, self.epoch + 1, self.device)
        x = split.x[order]
        ys = {k: v[order] for k, v in split.y.items()}
        total = torch.zeros((), device=self.device)
        self.network.train()
        if self.fast is not None:
            (y,) = ys.values()
            step = self.fast.step
            with torch.no_grad():
                for s in range(0, n, batch):
                    xb = x[s : s + batch]
                    loss = step(xb, y[s : s + batch])
                    self.optimizer.step(self.params, self.grads)
                    total.add_(loss, alpha=xb.shape[0])
        else:
            for s in range(0, n, batch):
                xb = x[s : s + batch]
                loss = self.objective.loss(self.network(xb), {k: v[s : s + batch] for k, v in ys.items()})
                self.grads.zero_()
                loss.backward()
                self.optimizer.step(self.params, self.grads)
                total.add_(loss.detach(), alpha=xb.shape[0])
        return float(total) / n

    @torch.no_grad()
    def evaluate(self, split: Split) -> tuple[float, dict[str, float]]:
        """The loss (standardized units) and the metrics (original units) on a split."""
        self.network.eval()
        outs = [self.network(split.x[s : s + EVAL_CHUNK]) for s in range(0, len(split), EVAL_CHUNK)]
        out = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return float(self.objective.loss(out, split.y)), self.objective.metrics(out, split.y)

    # -- bookkeeping -------------------------------------------------------------------------

    def record(self, result: EpochResult) -> bool:
        """Keep the epoch; update best metrics and early stopping. True when it is time to stop."""
        self.history.append(result)
        self.last_good.copy_(self.params)
        key = main_metric(result.metrics)
        if key in result.metrics:
            better = (
                not self.best
                or (higher_is_better(key) and result.metrics[key] > self.best[key])
                or (not higher_is_better(key) and result.metrics[key] < self.best[key])
            )
            if better:
                self.best = {**result.metrics, "val_loss": result.val_loss, "epoch": result.epoch}
        es = self.spec.early_stopping
        if es is None:
            return False
        if result.val_loss < self.best_val_loss - es.min_delta:
            self.best_val_loss = result.val_loss
            self.bad_epochs = 0
            if self.best_params is None:
                self.best_params = self.params.clone()
            else:
                self.best_params.copy_(self.params)
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= es.patience

    def checkpoint(self) -> bytes:
        tensors = {"params": self.params, **self.optimizer.state_tensors()}
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

    def restore(self, blob: bytes) -> None:
        tensors, state = read_checkpoint(blob)
        if state["spec"] != spec_digest(self.spec):
            raise ValueError("this checkpoint belongs to another spec")
        self.params.copy_(tensors["params"])
        self.last_good.copy_(self.params)
        self.optimizer.load_state_tensors({k: v.to(self.device) for k, v in tensors.items()})
        if "best_params" in tensors:
            self.best_params = tensors["best_params"].to(self.device)
        self.epoch = int(state["epoch"])
        self.best = state["best"]
        self.best_val_loss = state["best_val_loss"] if state["best_val_loss"] is not None else math.inf
        self.bad_epochs = int(state["bad_epochs"])
        self.history = [_epoch_from_row(r) for r in state["history"]]

    def artifact(self) -> bytes:
        """Weights of the last finite epoch, or of the best epoch under early stopping."""
        chosen = self.best_params if self.best_params is not None else self.last_good
        current = self.params.clone()
        self.params.copy_(chosen)
        try:
            extra = {"epochs_done": self.epoch, "param_count": self.checked.param_count, "task": self.checked.task}
            return save_artifact(
                self.network, self.spec.model_dump(mode="json"), self.checked.info, self.norm.to_tensors(), extra
            )
        finally:
            self.params.copy_(current)


def _epoch_from_row(row: dict[str, Any]) -> EpochResult:
    fixed = {"epoch", "train_loss", "val_loss", "seconds"}
    return EpochResult(
        epoch=int(row["epoch"]),
        train_loss=float(row["train_loss"]),
        val_loss=float(row["val_loss"]),
        metrics={k: float(v) for k, v in row.items() if k not in fixed},
        seconds=float(row["seconds"]),
    )


@contextlib.contextmanager
def _cpu_settings(device: torch.device, threads: int) -> Iterator[None]:
    """Thread count and oneDNN for this run only; oneDNN's setup per call costs more than it
    saves on small convolutions (measured in bench/README.md)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.backends.mkldnn.enabled = before[1]


def train(
    spec: ExperimentSpec | dict[str, Any],
    *,
    dataset: Dataset | None = None,
    device: str | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[bytes, int], None] | None = None,
    checkpoint_seconds: float = 30.0,
    resume_from: bytes | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train a spec to the end, to divergence, or until should_stop() says so."""
    started = time.perf_counter()
    upload = (lambda _id: dataset.info) if dataset is not None else None  # noqa: E731
    checked = validate_spec(spec, upload_info=upload)
    spec = checked.spec
    dev = resolve_device(device or spec.device)
    data = load_dataset(spec, dataset)
    stacks = (checked.plan.trunk, *checked.plan.heads.values())
    has_conv = any(isinstance(layer, Conv) for stack in stacks for layer in stack.layers)
    n_threads = threads or default_threads(checked.param_count, has_conv)
    with _cpu_settings(dev, n_threads):
        trainer = Trainer(checked, data, dev)
        if resume_from is not None:
            trainer.restore(resume_from)
        status, error = "succeeded", None
        last_checkpoint = time.monotonic()
        while trainer.epoch < spec.epochs:
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
            t0 = time.perf_counter()
            train_loss = trainer.train_epoch()
            val_loss, metrics = trainer.evaluate(trainer.val_split)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                status = "diverged"
                error = (
                    f"the loss became {'NaN' if math.isnan(train_loss) or math.isnan(val_loss) else 'infinite'} "
                    f"in epoch {trainer.epoch + 1}; the weights and metrics of epoch {trainer.epoch} are kept"
                )
                break
            trainer.epoch += 1
            result = EpochResult(trainer.epoch, train_loss, val_loss, metrics, time.perf_counter() - t0)
            stop_early = trainer.record(result)
            if on_epoch is not None:
                on_epoch(result)
            if on_checkpoint is not None and time.monotonic() - last_checkpoint >= checkpoint_seconds:
                on_checkpoint(trainer.checkpoint(), trainer.epoch)
                last_checkpoint = time.monotonic()
            if stop_early:
                break
        artifact = trainer.artifact() if trainer.epoch > 0 else None
    return TrainResult(
        status=status,  # type: ignore[arg-type]
        epochs_done=trainer.epoch,
        history=trainer.history,
        artifact=artifact,
        device=str(dev),
        param_count=checked.param_count,
        train_seconds=time.perf_counter() - started,
        error=error,
        best=trainer.best,
    )
