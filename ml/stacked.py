"""K networks of one layer structure as one: stacked weights, batched products, grouped convolutions.

Each parameter of the single network becomes a (K, *shape) block of one flat buffer (`Layout`);
member k's "row" (its parameters in a single network's flat order, `ml.optim.flatten_parameters`)
is what its checkpoints and artifacts hold. Each layer computes all members at once:

- dense: x (K, batch, in) -> `torch.baddbmm(b, x, W^T)` -> (K, batch, out);
- convolution: x (batch, K*C, H, W) -> `conv2d(..., groups=K)` -> (batch, K*F, H', W'): each
  member's filters see only its own channels;
- activations and max pooling act elementwise or per channel, so they never mix members.

Members never share a number: one member's NaN cannot reach another's outputs or gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ml import fastmlp
from ml.datasets import DatasetInfo
from ml.layers import Conv, Dense, NetworkPlan
from ml.networks import build_network

_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "gelu": F.gelu,
}


class Layout:
    """Where K members' parameters live in one flat buffer: parameter by parameter, each a
    contiguous (K, *shape) block, so batched products read and write them without copies.
    Member k's flat parameters in a single network's order (its "row") are a gather over the
    blocks; rows are what checkpoints and artifacts hold."""

    def __init__(self, shapes: list[torch.Size], k: int) -> None:
        self.shapes = shapes
        self.k = k
        self.sizes = [s.numel() for s in shapes]
        self.width = sum(self.sizes)  # P, one member's parameter count

    def blocks(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """(K, n) views of each parameter's block."""
        out, offset = [], 0
        for n in self.sizes:
            out.append(flat[offset : offset + self.k * n].view(self.k, n))
            offset += self.k * n
        return out

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [b.view(self.k, *shape) for b, shape in zip(self.blocks(flat), self.shapes, strict=True)]

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """(K, P) rows -> the flat buffer."""
        parts, offset = [], 0
        for n in self.sizes:
            parts.append(rows[:, offset : offset + n].reshape(-1))
            offset += n
        return torch.cat(parts)

    def to_rows(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.blocks(flat), dim=1)

    def row(self, flat: torch.Tensor, k: int) -> torch.Tensor:
        return torch.cat([b[k] for b in self.blocks(flat)])

    def set_row(self, flat: torch.Tensor, k: int, values: torch.Tensor) -> None:
        offset = 0
        for block, n in zip(self.blocks(flat), self.sizes, strict=True):
            block[k].copy_(values[offset : offset + n])
            offset += n

    def per_member(self, values: torch.Tensor) -> torch.Tensor:
        """(K,) values -> a flat buffer holding each member's value on all its parameters."""
        return torch.cat([values.unsqueeze(1).expand(self.k, n).reshape(-1) for n in self.sizes])


class StackedNetwork:
    """The forward pass of K members; parameters are (K, *shape) views of `self.params`,
    their gradients views of `self.grads` (both laid out by `self.layout`)."""

    def __init__(self, plan: NetworkPlan, rows: torch.Tensor) -> None:
        """rows: (K, P), each a member's flat parameters (see `initial_rows`)."""
        self.plan = plan
        self.k = rows.shape[0]
        self.layout = Layout([p.shape for p in build_network(plan).parameters()], self.k)
        self.params = self.layout.from_rows(rows)
        self.grads = torch.zeros_like(self.params)
        device = rows.device
        self.weights: list[nn.Parameter] = []  # (K, *shape) leaves, in the single network's order
        for value, grad in zip(self.layout.views(self.params), self.layout.views(self.grads), strict=True):
            leaf = nn.Parameter(torch.empty(0, device=device))
            leaf.data = value
            leaf.grad = grad
            self.weights.append(leaf)
        # The program: per stack (trunk, then each head), its layers with their weight indices.
        index = 0
        self.program: dict[str, list[tuple[Conv | Dense, int]]] = {}
        for name, stack in (("", plan.trunk), *plan.heads.items()):
            layers: list[tuple[Conv | Dense, int]] = []
            for layer in stack.layers:
                layers.append((layer, index))
                index += 2  # weight, bias
            self.program[name] = layers

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (K, batch, features), or images already grouped as (batch, K*C, H, W) (see
        `grouped`) -> {output: (K, batch, units)}."""
        h = self._run(self.program[""], x)
        return {name: self._flat(self._run(self.program[name], h)) for name in self.plan.heads}

    __call__ = forward

    def _flat(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 4:  # (batch, K*C, H, W) -> (K, batch, C*H*W), the single network's flatten order
            b = h.shape[0]
            return h.reshape(b, self.k, -1).transpose(0, 1)
        return h

    def _run(self, layers: list[tuple[Conv | Dense, int]], h: torch.Tensor) -> torch.Tensor:
        for layer, i in layers:
            w, bias = self.weights[i], self.weights[i + 1]
            if isinstance(layer, Conv):
                kernel = w.reshape(self.k * layer.out_channels, layer.in_channels, layer.kernel_size, layer.kernel_size)
                h = F.conv2d(h, kernel, bias.reshape(-1), groups=self.k)
                h = _ACT[layer.activation](h)
                if layer.pool:
                    h = F.max_pool2d(h, layer.pool)
            else:
                h = self._flat(h)
                h = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))
                if layer.activation is not None:
                    h = _ACT[layer.activation](h)
        return h


def grouped(x: torch.Tensor) -> torch.Tensor:
    """Per-member images (K, N, C, H, W) -> (N, K*C, H, W), the layout grouped convolutions read."""
    k, n, c, h, w = x.shape
    return x.transpose(0, 1).reshape(n, k * c, h, w)


def initial_rows(plan: NetworkPlan, seeds: list[int], device: torch.device) -> torch.Tensor:
    """(K, P): member k initialized exactly as a single network built with seeds[k]."""
    rows = [torch.cat([p.detach().reshape(-1) for p in build_network(plan, seed=s).parameters()]) for s in seeds]
    return torch.stack(rows).to(device)


def fast_step(network: StackedNetwork, info: DatasetInfo, loss: str) -> fastmlp.FastMLP | None:
    """The hand-written backward for a stack of single-head MLPs, or None where it does not apply."""
    single = build_network(network.plan)
    if not fastmlp.supports(single, info, loss):
        return None
    layers = network.program[next(iter(network.plan.heads))]
    acts = [str(layer.activation) for layer, _ in layers[:-1]]  # hidden layers: never None
    w = network.weights
    return fastmlp.FastMLP(
        [w[i].data for _, i in layers],
        [w[i + 1].data for _, i in layers],
        [w[i].grad for _, i in layers],  # type: ignore[misc]
        [w[i + 1].grad for _, i in layers],  # type: ignore[misc]
        acts,
        info,
        loss,
        stacked=True,
    )


def bind_single(plan: NetworkPlan, params: torch.Tensor, grads: torch.Tensor) -> nn.Module:
    """A single network whose parameters and gradients are views of a stack of one's flat
    buffers: at K = 1 each (1, *shape) block is the parameter itself, in the single network's
    flat order, so the group trains its one member with plain 2-D products (`addmm`, `mm`),
    as fast as a lone run and with the same numbers."""
    network = build_network(plan).to(params.device)
    offset = 0
    for p in network.parameters():
        n = p.numel()
        p.data = params[offset : offset + n].view_as(p)
        p.grad = grads[offset : offset + n].view_as(p)
        offset += n
    assert offset == params.numel(), "bind_single takes the buffers of a stack of one"
    return network


def member_network(plan: NetworkPlan) -> tuple[nn.Module, torch.Tensor]:
    """A single network whose flat parameter buffer can take any member's row (for artifacts)."""
    from ml.optim import flatten_parameters

    network = build_network(plan)
    flat, _ = flatten_parameters(network)
    return network, flat
