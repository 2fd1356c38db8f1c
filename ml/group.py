"""Train K compatible experiments as one stacked network (see `ml.stacked`).

    results = train_group([spec_a, spec_b, ...])   # one TrainResult per member, as train() gives

Members share the dataset and its split, the layer structure, the loss, the batch size and the
optimizer kind (`group_key`); they may differ in seed (initialization and data order),
learning rate, momentum, weight decay, epochs and early stopping. Every member keeps its own
data order (the permutation of `ml.train.permutation`, from its own seed), metrics, divergence
check, early stopping, checkpoint and artifact, in exactly a single run's form: a member
trained here ends with the metrics it would reach alone, up to floating-point rounding (batched
products sum in another order; see tests/ml/test_group.py for the tolerance).

A member that finishes (its epochs, early stopping, divergence or cancellation) is frozen and,
once half the stack is done, dropped from it, so the rest run at the speed of a smaller stack.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ml import fastmlp
from ml.cpu import cpu_settings, thread_count
from ml.data import Split, load_dataset, prepare
from ml.datasets import Dataset
from ml.grouping import group_key
from ml.networks import build_network
from ml.objective import Objective
from ml.optim import StackedOptimizer, flatten_parameters
from ml.results import EpochResult, TrainResult
from ml.runbook import RunBook, divergence
from ml.spec import CheckedSpec, ExperimentSpec, validate_spec
from ml.stacked import StackedNetwork, bind_single, fast_step, grouped, initial_rows
from ml.train import EVAL_CHUNK, permutation, resolve_device


@dataclass
class Member:
    index: int  # position in the caller's list
    checked: CheckedSpec
    book: RunBook
    row: int  # its row in the current stack
    result: TrainResult | None = None


class GroupTrainer:
    def __init__(self, checked: list[CheckedSpec], dataset: Dataset, device: torch.device) -> None:
        first = checked[0].spec
        keys = {group_key(c) for c in checked}
        if len(keys) != 1:
            raise ValueError("these specs cannot train together: dataset, layers, loss, batch size or optimizer differ")
        self.device = device
        self.plan = checked[0].plan
        self.info = checked[0].info
        self.loss = first.loss or "mse"
        self.norm, splits = prepare(first, dataset, device)
        self.train_split: Split = splits["train"]
        self.val_split: Split = splits["val"]
        n = len(self.train_split)
        self.batch = n if first.batch_size == "full" else min(int(first.batch_size), n)
        self.objective = Objective(self.info, self.loss, self.norm.y_std)
        rows = initial_rows(self.plan, [c.spec.seed for c in checked], device)
        self.members = [Member(i, c, RunBook(c, self.norm, rows[i]), row=i) for i, c in enumerate(checked)]
        self.network = StackedNetwork(self.plan, rows)
        self.optimizer = StackedOptimizer([c.spec.optimizer for c in checked], self.network.params, self.network.layout)
        self._bind()
        self.single, self.single_flat = _single(self.plan, device)

    def _bind(self) -> None:
        """The step functions of the current stack: at K = 1 a single network over the stack's
        buffers (2-D products, one data gather: a lone run's cost), else the stacked ones."""
        self.solo = bind_single(self.plan, self.network.params, self.network.grads) if self.network.k == 1 else None
        if self.solo is not None:
            supported = fastmlp.supports(self.solo, self.info, self.loss)  # type: ignore[arg-type]
            self.fast = fastmlp.FastMLP.for_network(self.solo, self.info, self.loss) if supported else None  # type: ignore[arg-type]
        else:
            self.fast = fast_step(self.network, self.info, self.loss)

    @property
    def active(self) -> list[Member]:
        return [m for m in self.members if m.result is None]

    def restore(self, member: Member, blob: bytes) -> None:
        tensors = member.book.restore(blob, self.device)
        self.network.layout.set_row(self.network.params, member.row, tensors["params"])
        self.optimizer.load_member_state(member.row, tensors)

    # -- one epoch for every member ------------------------------------------------------------

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One pass over the training rows for every member, each in its own order; (K,) losses."""
        if self.solo is not None:
            return self._train_solo(epoch)
        split, batch, k = self.train_split, self.batch, self.network.k
        n = len(split)
        seeds = [0] * k
        for m in self.members:
            if m.result is None:
                seeds[m.row] = m.checked.spec.seed
        orders = torch.stack([permutation(n, s, epoch, self.device) for s in seeds])  # (K, n)
        x = split.x[orders]  # (K, n, *input_shape)
        if x.dim() == 5 and self.fast is None:
            x = grouped(x)  # (n, K*C, H, W): what grouped convolutions read
            take = lambda s: x[s : s + batch]  # noqa: E731
        else:
            # (K, n, features), or images (K, n, C, H, W) that the hand-written MLP step flattens.
            take = lambda s: x[:, s : s + batch]  # noqa: E731
        ys = {name: v[orders] for name, v in split.y.items()}  # (K, n) each
        total = torch.zeros(k, device=self.device)
        params, grads, step = self.network.params, self.network.grads, self.optimizer.step
        if self.fast is not None:
            (y,) = ys.values()
            with torch.no_grad():
                for s in range(0, n, batch):
                    losses = self.fast.step(take(s), y[:, s : s + batch])
                    step(params, grads)
                    total.add_(losses, alpha=min(batch, n - s))
        else:
            for s in range(0, n, batch):
                losses = self.objective.loss(self.network(take(s)), {t: v[:, s : s + batch] for t, v in ys.items()})
                grads.zero_()
                losses.sum().backward()  # each member's gradient is its own loss's
                step(params, grads)
                total.add_(losses.detach(), alpha=min(batch, n - s))
        return total / n

    def _train_solo(self, epoch: int) -> torch.Tensor:
        """`train_epoch` for a stack of one: its data in 2-D, its single network's step."""
        (member,) = self.active
        split, batch, solo = self.train_split, self.batch, self.solo
        assert solo is not None
        n = len(split)
        order = permutation(n, member.checked.spec.seed, epoch, self.device)
        x = split.x[order]
        ys = {name: v[order] for name, v in split.y.items()}
        total = torch.zeros((), device=self.device)
        params, grads, step = self.network.params, self.network.grads, self.optimizer.step
        solo.train()
        if self.fast is not None:
            (y,) = ys.values()
            fast = self.fast.step
            with torch.no_grad():
                for s in range(0, n, batch):
                    xb = x[s : s + batch]
                    loss = fast(xb, y[s : s + batch])
                    step(params, grads)
                    total.add_(loss, alpha=xb.shape[0])
        else:
            for s in range(0, n, batch):
                xb = x[s : s + batch]
                loss = self.objective.loss(solo(xb), {t: v[s : s + batch] for t, v in ys.items()})
                grads.zero_()
                loss.backward()
                step(params, grads)
                total.add_(loss.detach(), alpha=xb.shape[0])
        return torch.tensor([float(total) / n], dtype=torch.float64)  # as a lone run divides

    @torch.no_grad()
    def evaluate(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(K,) validation losses and metrics, every member on the same rows."""
        split, k = self.val_split, self.network.k
        outs = []
        if self.solo is not None:  # a lone run's evaluation, as (1,) values
            self.solo.eval()
            outs = [self.solo(split.x[s : s + EVAL_CHUNK]) for s in range(0, len(split), EVAL_CHUNK)]
            one = {name: torch.cat([o[name] for o in outs]) for name in outs[0]}
            metrics = self.objective.metric_tensors(one, split.y)
            return self.objective.loss(one, split.y).reshape(1), {k: v.reshape(1) for k, v in metrics.items()}
        for s in range(0, len(split), EVAL_CHUNK):
            xs = split.x[s : s + EVAL_CHUNK]
            x = xs.repeat(1, k, 1, 1) if xs.dim() == 4 else xs.expand(k, *xs.shape)
            outs.append(self.network(x))
        out = {name: torch.cat([o[name] for o in outs], dim=1) for name in outs[0]}
        return self.objective.loss(out, split.y), self.objective.metric_tensors(out, split.y)

    # -- members -------------------------------------------------------------------------------

    def finish(self, member: Member, status: str, error: str | None, started: float) -> TrainResult:
        row = member.row
        artifact = None
        if member.book.epoch > 0:
            artifact = member.book.artifact(self.single, self.single_flat)
        member.result = member.book.result(status, artifact, str(self.device), time.perf_counter() - started, error)  # type: ignore[arg-type]
        self.optimizer.freeze(row)
        layout = self.network.layout
        layout.set_row(self.network.params, row, torch.zeros(layout.width, device=self.device))  # stays finite
        return member.result

    def checkpoint(self, member: Member) -> bytes:
        params = self.network.layout.row(self.network.params, member.row)
        return member.book.checkpoint(params, self.optimizer.member_state(member.row))

    def compact(self) -> None:
        """Drop finished members from the stack once they are at least half of it."""
        active = self.active
        if not active or len(active) * 2 > self.network.k:
            return
        rows = torch.tensor([m.row for m in active], device=self.device)
        kept = self.network.layout.to_rows(self.network.params)[rows]
        self.network = StackedNetwork(self.plan, kept)
        self.optimizer.keep(rows, self.network.layout)
        self._bind()
        for new_row, m in enumerate(active):
            m.row = new_row


def _single(plan: Any, device: torch.device) -> tuple[Any, torch.Tensor]:
    network = build_network(plan).to(device)
    flat, _ = flatten_parameters(network)
    return network, flat


def train_group(
    specs: Sequence[ExperimentSpec | dict[str, Any]],
    *,
    dataset: Dataset | None = None,
    device: str | None = None,
    on_epoch: Callable[[int, EpochResult], None] | None = None,
    cancelled: Callable[[], Iterable[int]] | None = None,
    on_checkpoint: Callable[[int, bytes, int], None] | None = None,
    on_finish: Callable[[int, TrainResult], None] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    checkpoint_seconds: float = 30.0,
    resume_from: dict[int, bytes] | None = None,
    threads: int | None = None,
    processes: int = 1,
) -> list[TrainResult]:
    """Train every spec; member i's callbacks get i (its index in `specs`).

    `cancelled()` is polled at each epoch boundary and returns the indices to stop now;
    `on_finish(i, result)` is called the moment member i ends (with its artifact);
    `on_epoch_end(epoch)` after every member's callbacks of an epoch (to write them together);
    `resume_from` maps indices to checkpoints (all from the same epoch: a group's checkpoints
    are taken together); `threads` and `processes` as in `ml.train.train`."""
    started = time.perf_counter()
    upload = (lambda _id: dataset.info) if dataset is not None else None  # noqa: E731
    checked = [validate_spec(s, upload_info=upload) for s in specs]
    dev = resolve_device(device or checked[0].spec.device)
    data = load_dataset(checked[0].spec, dataset)
    n_threads = thread_count(checked[0], len(checked), requested=threads, processes=processes)
    with cpu_settings(dev, n_threads):
        trainer = GroupTrainer(checked, data, dev)
        for i, blob in (resume_from or {}).items():
            trainer.restore(trainer.members[i], blob)
        epochs = {m.book.epoch for m in trainer.members}
        if len(epochs) != 1:
            raise ValueError(f"a group resumes from checkpoints of one epoch, got epochs {sorted(epochs)}")
        epoch = epochs.pop()

        def end(member: Member, status: str, error: str | None = None) -> None:
            result = trainer.finish(member, status, error, started)
            if on_finish is not None:
                on_finish(member.index, result)

        for m in trainer.members:
            if m.book.epoch >= m.checked.spec.epochs:
                end(m, "succeeded")
        last_checkpoint = time.monotonic()
        while trainer.active:
            if cancelled is not None:
                stop = set(cancelled())
                for m in trainer.active:
                    if m.index in stop:
                        end(m, "cancelled")
                if not trainer.active:
                    break
            trainer.compact()
            t0 = time.perf_counter()
            epoch += 1
            train_losses = trainer.train_epoch(epoch).tolist()
            val_losses, metrics = trainer.evaluate()
            val_list = val_losses.tolist()
            metric_lists = {name: v.tolist() for name, v in metrics.items()}
            seconds = time.perf_counter() - t0
            for m in trainer.active:
                r = m.row
                error = divergence(train_losses[r], val_list[r], m.book.epoch)
                if error is not None:
                    end(m, "diverged", error)
                    continue
                result = EpochResult(
                    epoch, train_losses[r], val_list[r], {k: v[r] for k, v in metric_lists.items()}, seconds
                )
                stop_early = m.book.record(result, trainer.network.layout.row(trainer.network.params, r))
                if on_epoch is not None:
                    on_epoch(m.index, result)
                if stop_early or epoch >= m.checked.spec.epochs:
                    end(m, "succeeded")
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            if on_checkpoint is not None and time.monotonic() - last_checkpoint >= checkpoint_seconds:
                for m in trainer.active:
                    on_checkpoint(m.index, trainer.checkpoint(m), epoch)
                last_checkpoint = time.monotonic()
    return [m.result for m in trainer.members]  # type: ignore[misc]
