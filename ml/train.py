"""Training: one linear loop over epochs, the whole split as tensors on the device.

    result = train(spec, on_epoch=print)

Each epoch shuffles the training rows with a permutation seeded by (seed, epoch), takes
mini-batches as slices, and ends with a validation pass. A NaN or infinite loss stops the run
as `diverged` with the last finite weights; `should_stop()` ends it as `cancelled` at an epoch
boundary; `on_checkpoint(blob, epoch)` receives a checkpoint from which `resume_from=blob`
continues exactly as if nothing had stopped (the shuffle depends only on seed and epoch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ml import fastmlp
from ml.artifact import read_checkpoint
from ml.cpu import cpu_settings, thread_count
from ml.data import Split, load_dataset, prepare
from ml.datasets import Dataset
from ml.networks import Network, build_network
from ml.objective import Objective
from ml.optim import FlatOptimizer, flatten_parameters
from ml.results import EpochResult, RunStatus, TrainResult
from ml.runbook import RunBook, divergence
from ml.spec import CheckedSpec, ExperimentSpec, validate_spec

EVAL_CHUNK = 8192  # validation rows per forward pass


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but no CUDA device is available to this worker")
        return torch.device("cuda")
    return torch.device("cpu")


def checkpoint_epoch(blob: bytes) -> int:
    """The last epoch a checkpoint holds."""
    return int(read_checkpoint(blob)[1]["epoch"])


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
            fastmlp.FastMLP.for_network(self.network, checked.info, spec.loss or "mse")
            if fastmlp.supports(self.network, checked.info, spec.loss or "mse")
            else None
        )
        self.book = RunBook(checked, self.norm, self.params)

    def restore(self, blob: bytes) -> None:
        tensors = self.book.restore(blob, self.device)
        self.params.copy_(tensors["params"])
        self.optimizer.load_state_tensors(tensors)

    # -- one epoch ---------------------------------------------------------------------------

    def train_epoch(self) -> float:
        """One pass over the training rows; the mean training loss (NaN if it diverged)."""
        split, batch = self.train_split, self.batch
        n = len(split)
        order = permutation(n, self.spec.seed, self.book.epoch + 1, self.device)
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

    def artifact(self) -> bytes:
        return self.book.artifact(self.network, self.params)


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
    processes: int = 1,
) -> TrainResult:
    """Train a spec to the end, to divergence, or until should_stop() says so. `threads` (None:
    `ml.cpu.thread_count`'s choice, for `processes` training processes on this host)."""
    started = time.perf_counter()
    upload = (lambda _id: dataset.info) if dataset is not None else None  # noqa: E731
    checked = validate_spec(spec, upload_info=upload)
    spec = checked.spec
    dev = resolve_device(device or spec.device)
    data = load_dataset(spec, dataset)
    with cpu_settings(dev, thread_count(checked, requested=threads, processes=processes)):
        trainer = Trainer(checked, data, dev)
        if resume_from is not None:
            trainer.restore(resume_from)
        book = trainer.book
        status: RunStatus = "succeeded"
        error: str | None = None
        last_checkpoint = time.monotonic()
        while book.epoch < spec.epochs:
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
            t0 = time.perf_counter()
            train_loss = trainer.train_epoch()
            val_loss, metrics = trainer.evaluate(trainer.val_split)
            error = divergence(train_loss, val_loss, book.epoch)
            if error is not None:
                status = "diverged"
                break
            result = EpochResult(book.epoch + 1, train_loss, val_loss, metrics, time.perf_counter() - t0)
            stop_early = book.record(result, trainer.params)
            if on_epoch is not None:
                on_epoch(result)
            if on_checkpoint is not None and time.monotonic() - last_checkpoint >= checkpoint_seconds:
                on_checkpoint(book.checkpoint(trainer.params, trainer.optimizer.state_tensors()), book.epoch)
                last_checkpoint = time.monotonic()
            if stop_early:
                break
        artifact = trainer.artifact() if book.epoch > 0 else None
    return book.result(status, artifact, str(dev), time.perf_counter() - started, error)
