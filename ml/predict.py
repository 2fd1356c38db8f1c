"""Rebuild a trained network from its artifact and predict in the dataset's original units.

    predictor = load_predictor(blob)            # safetensors: tensors and JSON, never a pickle
    predictor.predict([[0.3, -1.2], {"x1": 0.1, "x2": 0.4}])
    # [{"label": 1, "probabilities": [0.02, 0.98]}, ...]

Output per row: `label` and `probabilities` (classification), one such object per target (two
targets), `value` (mse regression), `mu` and `sigma` (gaussian_nll), de-normalized.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ml.artifact import Artifact, read_artifact
from ml.data import Normalization
from ml.datasets import DatasetInfo
from ml.memory import BYTES_PER_FLOAT, activation_floats
from ml.networks import Network, build_network
from ml.spec import validate_spec

DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024  # activations of one call when the caller sets no bound


class InputError(ValueError):
    """Prediction inputs that do not fit the model; the message names the row and the problem."""


def _label(name: str) -> int | str:
    return int(name) if name.lstrip("-").isdigit() else name


class Predictor:
    def __init__(self, artifact: Artifact) -> None:
        self.spec = artifact.spec
        self.info: DatasetInfo = artifact.info
        self.extra = artifact.extra
        checked = validate_spec(artifact.spec, upload_info=lambda _id: artifact.info)
        self.loss = checked.spec.loss
        self.network: Network = build_network(checked.plan)
        self.network.load_state_dict(artifact.weights, strict=True)
        self.network.eval()
        self.norm = Normalization.from_tensors(artifact.norm)
        # What one row's forward pass holds at most: every layer's outputs (the widest dominate),
        # twice (a layer's output and its activation's are alive together).
        self.row_bytes = 2 * max(1, activation_floats(checked.plan)) * BYTES_PER_FLOAT

    # -- inputs ------------------------------------------------------------------------------

    def parse(self, inputs: Any, max_rows: int | None = None) -> np.ndarray:
        """(N, *input_shape) float32 from JSON rows; raises InputError saying what is wrong."""
        if not isinstance(inputs, list) or not inputs:
            raise InputError("inputs must be a non-empty list of rows")
        if max_rows is not None and len(inputs) > max_rows:
            raise InputError(f"{len(inputs)} rows is more than the limit of {max_rows} per request")
        rows = [self._row(i, r) for i, r in enumerate(inputs)]
        return np.stack(rows).astype(np.float32)

    def _row(self, i: int, row: Any) -> np.ndarray:
        shape = self.info.input_shape
        if isinstance(row, dict):
            if self.info.is_image:
                raise InputError(f"row {i}: an image is a nested list [C][H][W] or [H][W], not an object")
            unknown = [k for k in row if k not in self.info.features]
            if unknown:
                raise InputError(
                    f"row {i}: unknown feature {unknown[0]!r}; the features are {', '.join(self.info.features)}"
                )
            missing = [f for f in self.info.features if f not in row]
            if missing:
                raise InputError(f"row {i}: missing feature {missing[0]!r}")
            row = [row[f] for f in self.info.features]
        _check_numbers(i, row)
        try:
            arr = np.asarray(row, dtype=np.float64)
        except (ValueError, TypeError):
            raise InputError(f"row {i}: not a rectangular array of numbers") from None
        if self.info.is_image and arr.ndim == 2 and shape[0] == 1:
            arr = arr[None]  # [H][W] -> [1][H][W]
        if arr.shape != shape:
            want = "x".join(map(str, shape)) if self.info.is_image else f"{shape[0]} numbers"
            if self.info.is_image and shape[0] == 1:
                want += f" (or {shape[1]}x{shape[2]})"
            got = "x".join(map(str, arr.shape)) or "a single number"
            raise InputError(f"row {i}: expected {want}, got {got}")
        if not np.isfinite(arr).all():
            raise InputError(f"row {i}: contains a value that is not a finite number")
        return arr

    # -- outputs -----------------------------------------------------------------------------

    def chunk_rows(self, max_memory_bytes: int = DEFAULT_MEMORY_BYTES) -> int:
        """Rows per forward pass so that its activations stay within `max_memory_bytes`."""
        return max(1, max_memory_bytes // self.row_bytes)

    @torch.no_grad()
    def raw(self, x: np.ndarray, max_memory_bytes: int = DEFAULT_MEMORY_BYTES) -> dict[str, torch.Tensor]:
        """The network's outputs on rows in original units (normalized here), computed a chunk
        of rows at a time: one call's activations stay within `max_memory_bytes` whatever the
        network's width and the number of rows."""
        xt = torch.from_numpy(self.norm.inputs(x))
        step = self.chunk_rows(max_memory_bytes)
        outs = [self.network(xt[s : s + step]) for s in range(0, len(xt), step)]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    def predict(self, inputs: Any, max_rows: int | None = None) -> list[dict[str, Any]]:
        return self.predict_array(self.parse(inputs, max_rows))

    def predict_array(self, x: np.ndarray, max_memory_bytes: int = DEFAULT_MEMORY_BYTES) -> list[dict[str, Any]]:
        out = self.raw(x, max_memory_bytes)
        n = x.shape[0]
        if self.loss == "gaussian_nll":
            name = self.info.targets[0].name
            mean, std = self.norm.y_mean[name], self.norm.y_std[name]
            mu = out["mu"].reshape(-1).double() * std + mean
            sigma = torch.exp(0.5 * out["log_var"].reshape(-1).double()) * std
            return [{"mu": float(mu[i]), "sigma": float(sigma[i])} for i in range(n)]
        per_target: dict[str, list[dict[str, Any]]] = {}
        for t in self.info.targets:
            z = out[t.name].double()
            if t.classes is None:
                values = z.reshape(-1) * self.norm.y_std[t.name] + self.norm.y_mean[t.name]
                per_target[t.name] = [{"value": float(v)} for v in values]
                continue
            if z.shape[-1] == 1:
                p1 = torch.sigmoid(z.reshape(-1))
                probs = torch.stack([1 - p1, p1], dim=1)
            else:
                probs = torch.softmax(z, -1)
            labels = probs.argmax(-1)
            per_target[t.name] = [
                {"label": _label(t.classes[int(labels[i])]), "probabilities": [float(p) for p in probs[i]]}
                for i in range(n)
            ]
        if len(self.info.targets) == 1:
            return per_target[self.info.targets[0].name]
        return [{name: rows[i] for name, rows in per_target.items()} for i in range(n)]


def _check_numbers(i: int, row: Any) -> None:
    """Refuse booleans, strings and nulls before NumPy would coerce them."""
    stack = [row]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise InputError(f"row {i}: {v!r} is not a number")
        elif isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"row {i}: contains a value that is not a finite number")


def load_predictor(blob: bytes) -> Predictor:
    return Predictor(read_artifact(blob))
