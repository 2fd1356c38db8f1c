"""Networks built from a `NetworkPlan`: a shared trunk, then one head per output.

MLP, CNN (valid convolutions, stride 1, optional max pooling), the two-target network (a trunk
of `shared_layers` layers, one head per target) and the Gaussian network (a μ network and a
log σ² network side by side) are all this one module with different plans.
"""

from __future__ import annotations

import torch
from torch import nn

from ml.layers import Conv, Dense, NetworkPlan, Stack

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def _sequential(stack: Stack, input_shape: tuple[int, ...]) -> nn.Sequential:
    modules: list[nn.Module] = []
    rank = len(input_shape)
    for layer in stack.layers:
        if isinstance(layer, Conv):
            modules.append(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size))
            modules.append(ACTIVATIONS[layer.activation]())
            if layer.pool:
                modules.append(nn.MaxPool2d(layer.pool))
        else:
            assert isinstance(layer, Dense)
            if rank == 3:
                modules.append(nn.Flatten())  # (batch, C, H, W) -> (batch, C*H*W)
                rank = 1
            modules.append(nn.Linear(layer.in_features, layer.out_features))
            if layer.activation is not None:
                modules.append(ACTIVATIONS[layer.activation]())
    return nn.Sequential(*modules)


class Network(nn.Module):
    """trunk: (batch, *input_shape) -> features; heads: features -> {output name: (batch, units)}."""

    def __init__(self, plan: NetworkPlan) -> None:
        super().__init__()
        self.plan = plan
        self.trunk = _sequential(plan.trunk, plan.input_shape)
        self.heads = nn.ModuleDict({name: _sequential(h, plan.trunk.output_shape) for name, h in plan.heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {name: head(h) for name, head in self.heads.items()}


def build_network(plan: NetworkPlan, seed: int | None = None) -> Network:
    """The network of a plan, initialized by PyTorch's defaults under `seed`."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Network(plan)
    return Network(plan)
