"""K networks of one layer structure as one: stacked weights, batched products, grouped convolutions.

Member k's parameters are row k of a [K, P] buffer, laid out exactly as a single network's flat
buffer (`ml.optim.flatten_parameters`), so row k *is* that member's network. Each layer's
weights are strided views of the buffer, shaped (K, *single shape):

- dense: x (K, batch, in) -> `torch.baddbmm(b, x, W^T)` -> (K, batch, out);
- convolution: x (batch, K*C, H, W) -> `conv2d(..., groups=K)` -> (batch, K*F, H', W'): each
  member's filters see only its own channels;
- activations and max pooling act elementwise or per channel, so they never mix members.

Members never share a number: one member's NaN cannot reach another's outputs or gradients.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ml import fastmlp
from ml.datasets import DatasetInfo
from ml.layers import Conv, NetworkPlan
from ml.networks import build_network

# Gradients accumulate into strided views of the (K, P) gradient buffer on purpose.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")

_ACT: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "gelu": F.gelu,
}


class StackedNetwork:
    """The forward pass of K members; parameters are views of `self.params` (K, P), their
    gradients views of `self.grads` (K, P)."""

    def __init__(self, plan: NetworkPlan, rows: torch.Tensor) -> None:
        """rows: (K, P), each a member's flat parameters (see `initial_rows`)."""
        self.plan = plan
        self.k = rows.shape[0]
        shapes = [p.shape for p in build_network(plan).parameters()]
        self.params = rows.clone()
        self.grads = torch.zeros_like(rows)
        device = rows.device
        self.weights: list[nn.Parameter] = []  # (K, *shape) leaves, in the single network's order
        offset = 0
        for shape in shapes:
            n = shape.numel()
            leaf = nn.Parameter(torch.empty(0, device=device))
            leaf.data = self.params[:, offset : offset + n].view(self.k, *shape)
            leaf.grad = self.grads[:, offset : offset + n].view(self.k, *shape)
            self.weights.append(leaf)
            offset += n
        # The program: per stack (trunk, then each head), its layers with their weight indices.
        index = 0
        self.program: dict[str, list[tuple[object, int]]] = {}
        for name, stack in (("", plan.trunk), *plan.heads.items()):
            layers = []
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

    def _run(self, layers: list[tuple[object, int]], h: torch.Tensor) -> torch.Tensor:
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
    acts = [layer.activation for layer, _ in layers[:-1]]  # type: ignore[attr-defined]
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


def member_network(plan: NetworkPlan) -> tuple[nn.Module, torch.Tensor]:
    """A single network whose flat parameter buffer can take any member's row (for artifacts)."""
    from ml.optim import flatten_parameters

    network = build_network(plan)
    flat, _ = flatten_parameters(network)
    return network, flat
