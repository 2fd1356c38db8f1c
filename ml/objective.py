"""Losses (in standardized units, what the optimizer sees) and validation metrics (in the
dataset's original units, what the user reads), for every kind of output."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ml.datasets import DatasetInfo, Target

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def target_loss(target: Target, loss: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z: (batch, units) logits or values; y: (batch,) labels or standardized values."""
    if target.is_regression:
        return F.mse_loss(z.squeeze(-1), y)
    if z.shape[-1] == 1:  # two classes, one logit
        zb = z.squeeze(-1)
        if loss == "bce":
            return F.binary_cross_entropy_with_logits(zb, y.to(zb.dtype))
        return F.mse_loss(torch.sigmoid(zb), y.to(zb.dtype))  # mse on the probability, as the report
    if loss == "ce":
        return F.cross_entropy(z, y)
    return F.mse_loss(torch.softmax(z, -1), F.one_hot(y, z.shape[-1]).to(z.dtype))


def gaussian_nll(mu: torch.Tensor, log_var: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of y under N(mu, exp(log_var)); all (batch,) or (batch, 1)."""
    mu, log_var = mu.reshape(-1), log_var.reshape(-1)
    return (0.5 * (log_var + (y - mu) ** 2 * torch.exp(-log_var))).mean() + HALF_LOG_2PI


class Objective:
    def __init__(self, info: DatasetInfo, loss: str, y_std: dict[str, float]) -> None:
        self.info = info
        self.loss_name = loss
        self.y_std = y_std

    def loss(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
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
    def metrics(self, out: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
        """Validation metrics in original units: accuracy per target, RMSE (and NLL) in the
        target's units (a standardized error times the training standard deviation)."""
        m: dict[str, float] = {}
        if self.loss_name == "gaussian_nll":
            t = self.info.targets[0]
            std = self.y_std[t.name]
            err = out["mu"].reshape(-1) - y[t.name]
            m["val_rmse"] = float(err.pow(2).mean().sqrt()) * std
            m["val_nll"] = float(gaussian_nll(out["mu"], out["log_var"], y[t.name])) + math.log(std)
            return m
        accuracies = []
        for t in self.info.targets:
            z = out[t.name]
            if t.is_regression:
                m["val_rmse"] = float((z.reshape(-1) - y[t.name]).pow(2).mean().sqrt()) * self.y_std[t.name]
                continue
            pred = (z.reshape(-1) > 0).long() if z.shape[-1] == 1 else z.argmax(-1)
            acc = float((pred == y[t.name]).float().mean())
            accuracies.append(acc)
            if len(self.info.targets) > 1:
                m[f"val_accuracy_{t.name}"] = acc
        if accuracies:
            m["val_accuracy"] = sum(accuracies) / len(accuracies)
        return m


def higher_is_better(metric: str) -> bool:
    return metric.startswith("val_accuracy")


def main_metric(metrics: dict[str, float]) -> str:
    """The metric that ranks runs: validation accuracy, else RMSE."""
    return "val_accuracy" if "val_accuracy" in metrics else "val_rmse"
