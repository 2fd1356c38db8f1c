"""Optimizers over one flat parameter buffer: one update for the whole network per step.

The network's parameters are views into a single flat tensor (see `flatten_parameters`), so an
SGD, Adam, AdamW or RMSprop step is a handful of tensor operations whatever the depth, instead
of several per parameter. The formulas are torch.optim's (tests check equality step by step);
the state is a few named flat tensors, which makes checkpoints trivial.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from ml.spec import OptimizerSpec

OptimizerName = Literal["sgd", "adam", "rmsprop", "adamw"]  # OptimizerSpec.name
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8


def flatten_parameters(network: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Move every parameter into one flat buffer and point `.data` and `.grad` at views of
    flat buffers; returns (flat parameters, flat gradients). Autograd then accumulates straight
    into the flat gradient, and the hand-written backward writes into the same views."""
    params = list(network.parameters())
    total = sum(p.numel() for p in params)
    device, dtype = params[0].device, params[0].dtype
    flat = torch.empty(total, device=device, dtype=dtype)
    grad = torch.zeros(total, device=device, dtype=dtype)
    offset = 0
    for p in params:
        n = p.numel()
        flat[offset : offset + n].copy_(p.data.reshape(-1))
        p.data = flat[offset : offset + n].view_as(p)
        p.grad = grad[offset : offset + n].view_as(p)
        offset += n
    return flat, grad


class FlatOptimizer:
    def __init__(self, spec: OptimizerSpec, params: torch.Tensor) -> None:
        self.name = spec.name
        self.lr = spec.lr
        self.momentum = spec.momentum or 0.0
        self.weight_decay = spec.weight_decay
        self.steps = 0
        self.state: dict[str, torch.Tensor] = {}
        zeros = torch.zeros_like
        if self.name in ("adam", "adamw"):
            self.state = {"exp_avg": zeros(params), "exp_avg_sq": zeros(params)}
        elif self.name == "rmsprop":
            self.state = {"square_avg": zeros(params)}
        if self.momentum and self.name in ("sgd", "rmsprop"):
            self.state["momentum_buffer"] = zeros(params)

    @torch.no_grad()
    def step(self, p: torch.Tensor, g: torch.Tensor) -> None:
        """One update of the flat parameters p from the flat gradient g (g may be modified)."""
        self.steps += 1
        lr, wd = self.lr, self.weight_decay
        if self.name == "adamw":
            if wd:
                p.mul_(1.0 - lr * wd)
        elif wd:
            g = g.add(p, alpha=wd)  # L2 penalty, as torch.optim's weight_decay
        if self.name in ("adam", "adamw"):
            b1, b2 = ADAM_BETAS
            m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            step_size = lr / (1.0 - b1**self.steps)
            denom = (v.sqrt() / math.sqrt(1.0 - b2**self.steps)).add_(ADAM_EPS)
            p.addcdiv_(m, denom, value=-step_size)
        elif self.name == "rmsprop":
            sq = self.state["square_avg"]
            sq.mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1.0 - RMSPROP_ALPHA)
            avg = sq.sqrt().add_(RMSPROP_EPS)
            if self.momentum:
                buf = self.state["momentum_buffer"]
                buf.mul_(self.momentum).addcdiv_(g, avg)
                p.add_(buf, alpha=-lr)
            else:
                p.addcdiv_(g, avg, value=-lr)
        else:  # sgd
            if self.momentum:
                buf = self.state["momentum_buffer"]
                buf.mul_(self.momentum).add_(g)
                g = buf
            p.add_(g, alpha=-lr)

    @classmethod
    def from_values(cls, name: OptimizerName, lr: float, momentum: float, weight_decay: float) -> FlatOptimizer:
        """An optimizer without state of its own (the caller gives it `state` and `steps`)."""
        self = cls.__new__(cls)
        self.name, self.lr, self.momentum, self.weight_decay = name, lr, momentum, weight_decay
        self.steps, self.state = 0, {}
        return self

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"opt.{k}": v for k, v in self.state.items()} | {"opt.steps": torch.tensor(self.steps)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for k in self.state:
            self.state[k].copy_(tensors[f"opt.{k}"])
        self.steps = int(tensors["opt.steps"])


class StackedOptimizer:
    """FlatOptimizer's formulas for K members at once, on a stacked flat buffer laid out by
    `layout` (ml.stacked.Layout). Learning rate, momentum and weight decay are per member
    (expanded to every parameter of the member). All members share the optimizer kind and
    Adam's step count (members start and resume together). `freeze(k)` stops member k."""

    def __init__(self, specs: list[OptimizerSpec], params: torch.Tensor, layout: Any) -> None:
        names = {s.name for s in specs}
        if len(names) != 1:
            raise ValueError(f"one optimizer kind per group, got {sorted(names)}")
        self.name = specs[0].name
        self.layout = layout
        column = lambda values: torch.tensor(values, dtype=params.dtype, device=params.device)  # noqa: E731
        self.lr = column([s.lr for s in specs])  # (K,)
        self.momentum = column([s.momentum or 0.0 for s in specs])
        self.weight_decay = column([s.weight_decay for s in specs])
        self.has_momentum = [bool(s.momentum) for s in specs]
        # The exact settings (a float32 column rounds them), for a stack of one.
        self.values: list[tuple[float, float, float]] = [(s.lr, s.momentum or 0.0, s.weight_decay) for s in specs]
        self.use_momentum = any(self.has_momentum) and self.name in ("sgd", "rmsprop")
        self.use_decay = bool(self.weight_decay.any())
        self.steps = 0
        zeros = torch.zeros_like
        self.state: dict[str, torch.Tensor] = {}
        if self.name in ("adam", "adamw"):
            self.state = {"exp_avg": zeros(params), "exp_avg_sq": zeros(params)}
        elif self.name == "rmsprop":
            self.state = {"square_avg": zeros(params)}
        if self.use_momentum:
            self.state["momentum_buffer"] = zeros(params)
        self._derive()

    def _derive(self) -> None:
        expand = self.layout.per_member
        self.neg_lr = expand(-self.lr)
        self.momentum_all = expand(self.momentum)
        self.decay_all = expand(self.weight_decay)
        self.decay_factor = expand(1.0 - self.lr * self.weight_decay)  # AdamW's decoupled decay
        # A stack of one steps with plain numbers: a lone run's operations (and numbers), no
        # per-parameter settings buffers to read.
        self.solo = FlatOptimizer.from_values(self.name, *self.values[0]) if self.layout.k == 1 else None
        if self.solo is not None:
            self.solo.state, self.solo.steps = self.state, self.steps

    def freeze(self, k: int) -> None:
        """Member k never changes again (it finished; its results are already taken)."""
        self.lr[k] = 0.0
        self.values[k] = (0.0, self.values[k][1], self.values[k][2])
        for t in self.state.values():  # a diverged member's NaN state would keep its row NaN
            self.layout.set_row(t, k, torch.zeros(self.layout.width, dtype=t.dtype, device=t.device))
        self._derive()

    def step(self, p: torch.Tensor, g: torch.Tensor) -> None:
        self.steps += 1
        if self.solo is not None:  # one no_grad context a step, as a lone run's (its cost shows on model4)
            self.solo.steps = self.steps - 1
            self.solo.step(p, g)
            return
        self._step_stacked(p, g)

    @torch.no_grad()
    def _step_stacked(self, p: torch.Tensor, g: torch.Tensor) -> None:
        if self.name == "adamw":
            if self.use_decay:
                p.mul_(self.decay_factor)
        elif self.use_decay:
            g = g.addcmul(p, self.decay_all)
        if self.name in ("adam", "adamw"):
            b1, b2 = ADAM_BETAS
            m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (v.sqrt() / math.sqrt(1.0 - b2**self.steps)).add_(ADAM_EPS)
            p.addcmul_(m / denom, self.neg_lr, value=1.0 / (1.0 - b1**self.steps))
        elif self.name == "rmsprop":
            sq = self.state["square_avg"]
            sq.mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1.0 - RMSPROP_ALPHA)
            avg = sq.sqrt().add_(RMSPROP_EPS)
            if self.use_momentum:
                buf = self.state["momentum_buffer"]
                buf.mul_(self.momentum_all).addcdiv_(g, avg)
                p.addcmul_(buf, self.neg_lr)
            else:
                p.addcmul_(g / avg, self.neg_lr)
        else:  # sgd
            if self.use_momentum:
                buf = self.state["momentum_buffer"]
                buf.mul_(self.momentum_all).add_(g)
                g = buf
            p.addcmul_(g, self.neg_lr)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's state in FlatOptimizer's form (a single run's checkpoint)."""
        out = {f"opt.{name}": self.layout.row(t, k) for name, t in self.state.items()}
        if not self.has_momentum[k]:
            out.pop("opt.momentum_buffer", None)
        return out | {"opt.steps": torch.tensor(self.steps)}

    def load_member_state(self, k: int, tensors: dict[str, torch.Tensor]) -> None:
        for name, t in self.state.items():
            if f"opt.{name}" in tensors:
                self.layout.set_row(t, k, tensors[f"opt.{name}"])
        self.steps = int(tensors["opt.steps"])

    def keep(self, rows: torch.Tensor, layout: Any) -> None:
        """Keep only these members (compaction), in this order, in the new layout."""
        self.lr, self.momentum, self.weight_decay = self.lr[rows], self.momentum[rows], self.weight_decay[rows]
        self.has_momentum = [self.has_momentum[int(r)] for r in rows]
        self.values = [self.values[int(r)] for r in rows]
        self.state = {name: layout.from_rows(self.layout.to_rows(t)[rows]) for name, t in self.state.items()}
        self.layout = layout
        self._derive()
