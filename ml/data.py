"""From a spec to tensors: load the dataset, split it, standardize with training statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ml.datasets import Dataset, DatasetInfo, load_builtin, split_indices
from ml.spec import ExperimentSpec


@dataclass
class Normalization:
    """Training-split statistics. Inputs: per feature (tabular) or per channel (images), shaped
    to broadcast over one sample; targets: per regression target. Identity where disabled."""

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: dict[str, float]
    y_std: dict[str, float]

    @classmethod
    def fit(cls, spec: ExperimentSpec, info: DatasetInfo, x: np.ndarray, y: dict[str, np.ndarray]) -> Normalization:
        shape = (info.input_shape[0], 1, 1) if info.is_image else info.input_shape
        x_mean = np.zeros(shape, np.float32)
        x_std = np.ones(shape, np.float32)
        if spec.dataset.normalize.inputs:
            axes = (0, 2, 3) if info.is_image else (0,)
            x_mean = x.mean(axis=axes).reshape(shape).astype(np.float32)
            x_std = x.std(axis=axes).reshape(shape).astype(np.float32)
            x_std[x_std < 1e-8] = 1.0  # a constant feature stays as it is, centred
        y_mean: dict[str, float] = {}
        y_std: dict[str, float] = {}
        for t in info.targets:
            if t.is_regression:
                values = y[t.name].astype(np.float64)
                use = spec.dataset.normalize.target
                y_mean[t.name] = float(values.mean()) if use else 0.0
                std = float(values.std()) if use else 1.0
                y_std[t.name] = std if std > 1e-12 else 1.0
        return cls(x_mean, x_std, y_mean, y_std)

    def inputs(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.x_mean) / self.x_std).astype(np.float32)

    def target(self, name: str, values: np.ndarray) -> np.ndarray:
        return ((values - self.y_mean[name]) / self.y_std[name]).astype(np.float32)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {"norm.x_mean": torch.from_numpy(self.x_mean), "norm.x_std": torch.from_numpy(self.x_std)}
        for name in self.y_mean:
            out[f"norm.y_mean.{name}"] = torch.tensor([self.y_mean[name]], dtype=torch.float64)
            out[f"norm.y_std.{name}"] = torch.tensor([self.y_std[name]], dtype=torch.float64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> Normalization:
        y_mean = {k.removeprefix("norm.y_mean."): float(v) for k, v in tensors.items() if k.startswith("norm.y_mean.")}
        y_std = {k.removeprefix("norm.y_std."): float(v) for k, v in tensors.items() if k.startswith("norm.y_std.")}
        return cls(tensors["norm.x_mean"].numpy(), tensors["norm.x_std"].numpy(), y_mean, y_std)


@dataclass
class Split:
    """One split as tensors on the device: x (N, *input_shape); y maps target → (N,) int64
    labels or float32 standardized values."""

    x: torch.Tensor
    y: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.x.shape[0])


def load_dataset(spec: ExperimentSpec, dataset: Dataset | None = None) -> Dataset:
    """The spec's dataset: the one given (an upload), or the built-in it names."""
    if dataset is not None:
        return dataset
    if spec.dataset.name is None:
        raise ValueError(f"dataset {spec.dataset.id!r} is an upload: pass it as dataset=")
    return load_builtin(spec.dataset.name, spec.dataset.params, spec.dataset.seed)


def split_of(spec: ExperimentSpec, dataset: Dataset) -> dict[str, np.ndarray]:
    s = spec.dataset.split
    return split_indices(dataset, s.val, s.test, spec.dataset.seed)


def prepare(
    spec: ExperimentSpec, dataset: Dataset, device: torch.device, names: tuple[str, ...] = ("train", "val")
) -> tuple[Normalization, dict[str, Split]]:
    """Split, fit the normalization on the training rows only, and move the named splits to the
    device. Training never asks for "test": it is not even materialized."""
    idx = split_of(spec, dataset)
    train = idx["train"]
    norm = Normalization.fit(spec, dataset.info, dataset.x[train], {k: v[train] for k, v in dataset.y.items()})
    splits: dict[str, Split] = {}
    for name in names:
        rows = idx[name]
        x = torch.from_numpy(norm.inputs(dataset.x[rows])).to(device)
        y: dict[str, torch.Tensor] = {}
        for t in dataset.info.targets:
            values = dataset.y[t.name][rows]
            if t.is_regression:
                y[t.name] = torch.from_numpy(norm.target(t.name, values)).to(device)
            else:
                y[t.name] = torch.from_numpy(values.astype(np.int64)).to(device)
        splits[name] = Split(x, y)
    return norm, splits
