"""A hand-derived forward and backward pass for plain MLPs: the training step without autograd.

At the report's sizes (a few hundred parameters, batches of 10) a step costs the framework's
per-call overhead, not arithmetic: autograd's graph bookkeeping alone is most of it. For an MLP
with one output head the backward pass is a few matrix products per layer, written here with
the same ATen kernels autograd would call (`threshold_backward`, `sigmoid_backward`, ...), so the
gradients are the same numbers (tests compare them with autograd's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ml.datasets import DatasetInfo
from ml.networks import ACTIVATIONS, Network

aten = torch.ops.aten

# activation name -> (forward, backward(grad_of_output, pre_activation z, output a))
_ACT: dict[str, tuple[Callable, Callable]] = {
    "relu": (torch.relu, lambda g, z, a: aten.threshold_backward(g, a, 0)),
    "sigmoid": (torch.sigmoid, lambda g, z, a: aten.sigmoid_backward(g, a)),
    "tanh": (torch.tanh, lambda g, z, a: aten.tanh_backward(g, a)),
    "leaky_relu": (F.leaky_relu, lambda g, z, a: aten.leaky_relu_backward(g, z, 0.01, False)),
    "elu": (F.elu, lambda g, z, a: aten.elu_backward(g, 1.0, 1, 1, False, z)),
    "gelu": (F.gelu, lambda g, z, a: aten.gelu_backward(g, z)),
}


def supports(network: Network, info: DatasetInfo, loss: str) -> bool:
    """A single-head network of dense layers only (images are flattened first)."""
    if loss == "gaussian_nll" or len(info.targets) != 1 or len(network.trunk) != 0:
        return False
    (head,) = network.heads.values()
    return all(isinstance(m, (nn.Linear, nn.Flatten, *ACTIVATIONS.values())) for m in head.children())


def _grad(p: torch.Tensor) -> torch.Tensor:
    """The parameter's gradient: a view of the flat gradient buffer, set before training starts."""
    assert p.grad is not None, "flatten_parameters() gives every parameter its gradient view first"
    return p.grad


def loss_kind(info: DatasetInfo, loss: str, outputs: int) -> Callable:
    target = info.targets[0]
    if target.is_regression:
        return _mse_values
    if outputs == 1:
        return _bce_logit if loss == "bce" else _mse_probability
    return _cross_entropy if loss == "ce" else _mse_softmax


class FastMLP:
    """step(x, y) computes the loss and writes the gradients into the given gradient views
    (of the flat gradient buffer), returning the loss (0-dim, or (K,) for a stack).

    One network: weights (out, in), x (batch, in). A stack of K networks: weights (K, out, in),
    x (K, batch, in), and batched matrix products; each member's gradient is its own."""

    def __init__(
        self,
        weights: list[torch.Tensor],
        biases: list[torch.Tensor],
        grad_w: list[torch.Tensor],
        grad_b: list[torch.Tensor],
        activations: list[str],
        info: DatasetInfo,
        loss: str,
        stacked: bool = False,
    ) -> None:
        self.weights, self.biases, self.grad_w, self.grad_b = weights, biases, grad_w, grad_b
        self.forward_acts = [_ACT[a][0] for a in activations]
        self.backward_acts = [_ACT[a][1] for a in activations]
        self.flatten = info.is_image
        self.stacked = stacked
        self.loss_grad = loss_kind(info, loss, weights[-1].shape[-2])

    @classmethod
    def for_network(cls, network: Network, info: DatasetInfo, loss: str) -> FastMLP:
        (head,) = network.heads.values()
        linears = [m for m in head.children() if isinstance(m, nn.Linear)]
        acts = [_activation_name(m) for m in head.children() if not isinstance(m, nn.Linear | nn.Flatten)]
        return cls(
            [m.weight.data for m in linears],  # (out, in) views of the flat buffer
            [m.bias.data for m in linears],
            [_grad(m.weight) for m in linears],
            [_grad(m.bias) for m in linears],
            acts,
            info,
            loss,
        )

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.flatten:
            x = x.reshape(*x.shape[:-3], -1)  # (..., batch, C, H, W) -> (..., batch, C*H*W)
        inputs = [x]  # the input of each layer
        pre = []  # pre-activations of hidden layers
        a = x
        last = len(self.weights) - 1
        for i in range(last + 1):
            if self.stacked:
                z = torch.baddbmm(self.biases[i].unsqueeze(1), a, self.weights[i].transpose(1, 2))
            else:
                z = torch.addmm(self.biases[i], a, self.weights[i].t())
            if i < last:
                a = self.forward_acts[i](z)
                pre.append(z)
                inputs.append(a)
        loss, dz = self.loss_grad(z, y)
        for i in range(last, -1, -1):
            if self.stacked:
                torch.bmm(dz.transpose(1, 2), inputs[i], out=self.grad_w[i])
                torch.sum(dz, 1, out=self.grad_b[i])
                if i:
                    da = torch.bmm(dz, self.weights[i])
            else:
                torch.mm(dz.t(), inputs[i], out=self.grad_w[i])
                torch.sum(dz, 0, out=self.grad_b[i])
                if i:
                    da = dz.mm(self.weights[i])
            if i:
                dz = self.backward_acts[i - 1](da, pre[i - 1], inputs[i])
        return loss


def _activation_name(module: nn.Module) -> str:
    return next(name for name, cls in ACTIVATIONS.items() if type(module) is cls)


# Each returns (loss, d loss / d z) for z (..., batch, units) and y (..., batch); the loss is
# a mean over the batch (one per stacked member).


def _bce_logit(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    zb = z.squeeze(-1)
    yf = y.to(zb.dtype)
    loss = F.binary_cross_entropy_with_logits(zb, yf, reduction="none").mean(-1)
    return loss, (torch.sigmoid(zb) - yf).mul_(1.0 / zb.shape[-1]).unsqueeze(-1)


def _mse_probability(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.sigmoid(z.squeeze(-1))
    diff = p - y.to(p.dtype)
    loss = diff.pow(2).mean(-1)
    return loss, aten.sigmoid_backward(diff.mul_(2.0 / p.shape[-1]), p).unsqueeze(-1)


def _mse_values(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    diff = z.squeeze(-1) - y
    loss = diff.pow(2).mean(-1)
    return loss, diff.mul_(2.0 / diff.shape[-1]).unsqueeze(-1)


def _cross_entropy(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logp = torch.log_softmax(z, -1)
    index = y.unsqueeze(-1)
    loss = -logp.gather(-1, index).squeeze(-1).mean(-1)
    grad = logp.exp_()
    grad.scatter_add_(-1, index, torch.full(index.shape, -1.0, dtype=z.dtype, device=z.device))
    return loss, grad.mul_(1.0 / z.shape[-2])


def _mse_softmax(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.softmax(z, -1)
    diff = p - F.one_hot(y, z.shape[-1]).to(p.dtype)
    loss = diff.pow(2).mean((-2, -1))
    dp = diff.mul_(2.0 / (z.shape[-2] * z.shape[-1]))
    return loss, aten._softmax_backward_data(dp, p, -1, p.dtype)
