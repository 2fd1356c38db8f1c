"""Losses (in standardized units, what the optimizer sees) and validation metrics (in the
dataset's original units, what the user reads), for every kind of output.

Every function works on one network or on K stacked networks at once: outputs are
(..., batch, units) and targets (..., batch), and each loss is a mean over the batch, so a
stack of K networks gets K losses (their sum has each member's own gradient).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ml.datasets import DatasetInfo, Target

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def target_loss(target: Target, loss: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z: (..., batch, units) logits or values; y: (..., batch) labels or standardized values."""
    y = y.expand(z.shape[:-1])  # the same rows for every member (validation)
    if target.is_regression:
        return (z.squeeze(-1) - y).pow(2).mean(-1)
    if z.shape[-1] == 1:  # two classes, one logit
        zb = z.squeeze(-1)
        yf = y.to(zb.dtype)
        if loss == "bce":
            return F.binary_cross_entropy_with_logits(zb, yf, reduction="none").mean(-1)
        return (torch.sigmoid(zb) - yf).pow(2).mean(-1)  # mse on the probability, as the report
    if loss == "ce":
        return -torch.log_softmax(z, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1)
    onehot = F.one_hot(y, z.shape[-1]).to(z.dtype)
    return (torch.softmax(z, -1) - onehot).pow(2).mean((-2, -1))


def gaussian_nll(mu: torch.Tensor, log_var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of y (..., batch) under N(mu, exp(log_var)), both (..., batch, 1)."""
    mu, log_var = mu.squeeze(-1), log_var.squeeze(-1)
    return (0.5 * (log_var + (y - mu) ** 2 * torch.exp(-log_var))).mean(-1) + HALF_LOG_2PI


class Objective:
    def __init__(self, info: DatasetInfo, loss: str, y_std: dict[str, float]) -> None:
        self.info = info
        self.loss_name = loss
        self.y_std = y_std

    def loss(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss: a scalar for one network, (K,) for a stack."""
        if self.loss_name == "gaussian_nll":
            t = self.info.targets[0]
            return gaussian_nll(out["mu"], out["log_var"], y[t.name])
        total = None
        for t in self.info.targets:
            part = target_loss(t, self.loss_name, out[t.name], y[t.name])
            total = part if total is None else total + part
        assert total is not None
        return total

    @torch.no_grad()
    def metric_tensors(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Validation metrics in original units (scalars, or (K,) for a stack): accuracy per
        target, RMSE (and NLL) in the target's units (a standardized error times the training
        standard deviation); for gaussian_nll also the shares within μ ± σ and μ ± 2σ."""
        m: dict[str, torch.Tensor] = {}
        if self.loss_name == "gaussian_nll":
            t = self.info.targets[0]
            std = self.y_std[t.name]
            err = out["mu"].squeeze(-1) - y[t.name]
            m["val_rmse"] = err.pow(2).mean(-1).sqrt() * std
            m["val_nll"] = gaussian_nll(out["mu"], out["log_var"], y[t.name]) + math.log(std)
            # Calibration: the share of targets inside μ ± σ and μ ± 2σ (a calibrated Gaussian
            # holds 68% and 95%); the same in any units, so computed on standardized values.
            distance = err.abs()
            sigma = torch.exp(0.5 * out["log_var"].squeeze(-1))
            m["val_within_1_sigma"] = (distance <= sigma).float().mean(-1)
            m["val_within_2_sigma"] = (distance <= 2 * sigma).float().mean(-1)
            return m
        accuracies = []
        for t in self.info.targets:
            z = out[t.name]
            if t.is_regression:
                m["val_rmse"] = (z.squeeze(-1) - y[t.name]).pow(2).mean(-1).sqrt() * self.y_std[t.name]
                continue
            pred = (z.squeeze(-1) > 0).long() if z.shape[-1] == 1 else z.argmax(-1)
            acc = (pred == y[t.name]).float().mean(-1)
            accuracies.append(acc)
            if len(self.info.targets) > 1:
                m[f"val_accuracy_{t.name}"] = acc
        if accuracies:
            m["val_accuracy"] = torch.stack(accuracies).mean(0)
        return m

    def metrics(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
        return {k: float(v) for k, v in self.metric_tensors(out, y).items()}
