"""Metrics of a trained model on one split of its dataset, in the dataset's original units.

The split is the one the run used (same seed, same fractions), so `evaluate(predictor, dataset,
"test")` looks at rows that training, early stopping and selection never saw.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ml.data import split_of
from ml.datasets import Dataset
from ml.objective import Objective
from ml.predict import Predictor
from ml.spec import ExperimentSpec

SPLITS = ("train", "val", "test")


def evaluate(predictor: Predictor, dataset: Dataset, split: str) -> dict[str, float | int]:
    """accuracy (per target for two targets), rmse; for gaussian_nll also nll and the share of
    targets inside μ ± σ and μ ± 2σ."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    spec = ExperimentSpec.model_validate(predictor.spec)
    rows = split_of(spec, dataset)[split]
    if len(rows) == 0:
        raise ValueError(f"the {split} split of this experiment is empty (split.{split} = 0)")
    x = dataset.x[rows]
    out = predictor.raw(x)
    y: dict[str, torch.Tensor] = {}
    for t in dataset.info.targets:
        values = dataset.y[t.name][rows]
        if t.is_regression:
            y[t.name] = torch.from_numpy(predictor.norm.target(t.name, values))
        else:
            y[t.name] = torch.from_numpy(values.astype(np.int64))
    objective = Objective(predictor.info, predictor.loss or "mse", predictor.norm.y_std)
    metrics: dict[str, float | int] = {k.removeprefix("val_"): v for k, v in objective.metrics(out, y).items()}
    if predictor.loss == "gaussian_nll":  # within_1_sigma, within_2_sigma: as training measures them
        name = dataset.info.targets[0].name
        sigma = torch.exp(0.5 * out["log_var"].reshape(-1).double())
        metrics["mean_sigma"] = float(sigma.mean()) * predictor.norm.y_std[name]
    metrics["rows"] = len(rows)
    return {k: (v if isinstance(v, int) or math.isfinite(v) else float("nan")) for k, v in metrics.items()}
