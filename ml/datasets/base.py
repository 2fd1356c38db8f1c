"""What every dataset is: arrays plus a self-description (task, shapes, features, targets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Task = Literal["binary", "multiclass", "multi_target", "regression"]


class DatasetError(ValueError):
    """A dataset cannot be built or read; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Target:
    """One thing to predict: a classification target with its classes, or a regression target."""

    name: str
    classes: tuple[str, ...] | None = None  # None for a regression target

    @property
    def is_regression(self) -> bool:
        return self.classes is None

    def to_dict(self) -> dict:
        return {"name": self.name, "classes": list(self.classes) if self.classes is not None else None}


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's description, known without loading it for built-ins."""

    name: str
    task: Task
    input_shape: tuple[int, ...]  # (n_features,) for tabular, (C, H, W) for images
    features: tuple[str, ...]  # feature names (tabular) or channel names (images)
    targets: tuple[Target, ...]
    n_samples: int
    description: str = ""

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "features": list(self.features),
            "targets": {t.name: (list(t.classes) if t.classes is not None else None) for t in self.targets},
            "n_samples": self.n_samples,
            "description": self.description,
        }


@dataclass
class Dataset:
    """Arrays in memory: x is float32 (N, *input_shape); y maps each target name to (N,) labels
    (int64 class indices) or values (float32, original units for regression)."""

    info: DatasetInfo
    x: np.ndarray
    y: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])
