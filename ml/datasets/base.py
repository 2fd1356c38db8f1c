"""What every dataset is: arrays plus a self-description (task, shapes, features, targets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Task = Literal["binary", "multiclass", "multi_target", "regression"]


class DatasetError(ValueError):
    """A dataset cannot be built or read; the message says what is wrong and how to fix it."""


class DatasetTooLarge(DatasetError):
    """An upload above one of its size limits; `limit` names the UploadLimits field exceeded
    (the API answers 413 naming its setting)."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may cost to read; None is unlimited (a stored upload, already accepted,
    is read again by the worker without limits)."""

    max_rows: int | None = None
    max_columns: int | None = None  # CSV: from the header line, before the body is parsed
    max_cells: int | None = None  # CSV: rows (counted as lines) × columns, before the body is parsed
    max_inflated_bytes: int | None = None  # NPZ: the arrays once decompressed, from their headers


NO_LIMITS = UploadLimits()
MAX_TEXT_CHARS = 200  # what an error message echoes of a cell, and the longest column or class name


def excerpt(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """At most `limit` characters of `text` (an error never echoes a 5 MB cell whole)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


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
    upload_id: str | None = None  # an upload's id when the API looked it up (not part of to_dict)

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
