"""The one rule that ranks epochs and runs by validation (torch-free, so the API may import it).

    better = rank_key(a) < rank_key(b)

An epoch's validation metrics (`{"epoch", "val_loss", "val_accuracy" | "val_rmse", ...}`) are
ranked by the task's metric (accuracy up, RMSE down; for two targets `val_accuracy` is already
the mean over targets, and two RMSEs `val_rmse_<target>` are averaged), ties broken by the
validation loss, then by the earlier epoch. A missing or non-finite number ranks last. The test
split never enters: these are validation numbers only.

Used by the training loops (which weights are kept), the worker (`metrics.best`), sweeps (the
table's best row, with the smaller network among equals) and the objective of searches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

WORST = math.inf


def main_metric(metrics: Mapping[str, Any]) -> str:
    """The metric that ranks: `val_accuracy` for classification, else `val_rmse`."""
    return "val_accuracy" if "val_accuracy" in metrics else "val_rmse"


def higher_is_better(metric: str) -> bool:
    return metric.startswith("val_accuracy")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metric_value(metrics: Mapping[str, Any]) -> float | None:
    """The task's validation metric of `metrics` (None when it has none or it is not finite)."""
    if "val_accuracy" in metrics:
        return _number(metrics["val_accuracy"])
    if "val_rmse" in metrics:
        return _number(metrics["val_rmse"])
    per_target = [_number(v) for k, v in metrics.items() if k.startswith("val_rmse_")]
    if per_target and all(v is not None for v in per_target):
        return sum(per_target) / len(per_target)  # type: ignore[arg-type]
    return None


def rank_key(metrics: Mapping[str, Any]) -> tuple[float, float, float]:
    """Smaller is better: (the metric, signed so that down is better; val_loss; epoch)."""
    value = metric_value(metrics)
    if value is None:
        signed = WORST
    else:
        signed = -value if "val_accuracy" in metrics else value
    loss = _number(metrics.get("val_loss"))
    epoch = _number(metrics.get("epoch"))
    return signed, WORST if loss is None else loss, WORST if epoch is None else epoch


def is_better(new: Mapping[str, Any], best: Mapping[str, Any] | None) -> bool:
    """True when `new` ranks strictly before `best` (anything beats nothing)."""
    if not best:
        return True
    return rank_key(new) < rank_key(best)
