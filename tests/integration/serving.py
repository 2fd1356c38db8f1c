"""What the serving tests share: one spec per task kind, the trained network's output recomputed
from its downloaded weights without ml.predict, and rows of each dataset to ask about."""

from __future__ import annotations

import json
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load as load_tensors

from ml.data import load_dataset, split_of
from ml.spec import validate_spec
from tests.integration.test_experiments import tiny_spec

SMALL_CACHE = 2
MAX_ROWS = 50
DEFAULT_KEY, ALICE_KEY = "key-default", "key-alice"

SPECS: dict[str, dict[str, Any]] = {
    "binary": tiny_spec("serve-binary", epochs=15, dataset={"name": "spirals", "params": {"n_samples": 400}}),
    "multiclass": {
        "name": "serve-multiclass",
        "dataset": {"name": "digits", "params": {"n_samples": 300}},
        "model": {"type": "cnn", "conv_layers": 1, "filters": 4, "kernel_size": 5, "hidden_layers": 1, "neurons": 16},
        "optimizer": {"name": "adam", "lr": 0.01},
        "epochs": 3,
    },
    "two_targets": {
        "name": "serve-two-targets",
        "dataset": {"name": "colored_digits", "params": {"n_samples": 300, "n_colors": 3}},
        "model": {
            "type": "cnn",
            "conv_layers": 1,
            "filters": 2,
            "kernel_size": 5,
            "hidden_layers": 0,
            "heads": {"color": {"filters": 1, "kernel_size": 16}},
        },
        "optimizer": {"name": "adam", "lr": 0.01},
        "epochs": 3,
    },  # fmt: skip
    "regression": {
        "name": "serve-regression",
        "dataset": {"name": "house_prices"},
        "model": {"hidden_layers": 2, "neurons": 8},
        "optimizer": {"name": "adam", "lr": 0.01},
        "batch_size": 64,
        "epochs": 10,
    },
    "gaussian": {
        "name": "serve-gaussian",
        "dataset": {"name": "house_prices"},
        "loss": "gaussian_nll",
        "model": {"hidden_layers": 2, "neurons": 8, "activation": "tanh", "sigma": {"hidden_layers": 1, "neurons": 4}},
        "optimizer": {"name": "adam", "lr": 0.01},
        "batch_size": 64,
        "epochs": 10,
    },
}


# -- the network's own output, recomputed here from the downloaded file ------------------------

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "elu": F.elu, "gelu": F.gelu,
               "leaky_relu": F.leaky_relu}  # fmt: skip


def header(blob: bytes) -> dict[str, Any]:
    """The safetensors metadata, read by hand: 8 bytes of length, then JSON."""
    n = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8 : 8 + n])["__metadata__"]
    return {k: json.loads(v) if k != "format" else v for k, v in meta.items()}


def _layers(tensors: dict[str, torch.Tensor], prefix: str, h: torch.Tensor, activation: str, output: bool) -> Any:
    """Convolutions (4-D weights) and dense layers (2-D) in order; every layer is followed by the
    activation except a head's output layer."""
    layers = sorted({int(k[len(prefix) :].split(".")[0]) for k in tensors if k.startswith(prefix)})
    for j, i in enumerate(layers):
        w, b = tensors[f"{prefix}{i}.weight"], tensors[f"{prefix}{i}.bias"]
        if w.dim() == 4:
            h = ACTIVATIONS[activation](F.conv2d(h, w, b))  # (batch, filters, H', W')
            continue
        h = h.flatten(1) @ w.T + b
        if not (output and j == len(layers) - 1):
            h = ACTIVATIONS[activation](h)
    return h


def expected_predictions(blob: bytes, rows: list[Any]) -> list[dict[str, Any]]:
    """What the trained network answers for `rows`, from its weights and statistics alone."""
    meta, tensors = header(blob), load_tensors(blob)
    spec, targets = meta["spec"], meta["info"]["targets"]
    model = spec["model"]
    x = torch.tensor(rows, dtype=torch.float32)
    if len(meta["info"]["input_shape"]) == 3 and x.dim() == 3:
        x = x[:, None]  # [H][W] rows of a one-channel dataset
    x = (x - tensors["norm.x_mean"]) / tensors["norm.x_std"]
    with torch.no_grad():
        h = _layers(tensors, "model.trunk.", x, model["activation"], output=False)
        heads = sorted({k.split(".")[2] for k in tensors if k.startswith("model.heads.")})
        out = {}
        for name in heads:
            override = (model.get("sigma") if name == "log_var" else (model.get("heads") or {}).get(name)) or {}
            activation = override.get("activation") or model["activation"]
            out[name] = _layers(tensors, f"model.heads.{name}.", h, activation, output=True)
    if spec["loss"] == "gaussian_nll":
        (target,) = targets
        mean, std = float(tensors[f"norm.y_mean.{target}"]), float(tensors[f"norm.y_std.{target}"])
        mu = out["mu"].double().reshape(-1) * std + mean
        sigma = torch.exp(0.5 * out["log_var"].double().reshape(-1)) * std
        return [{"mu": float(m), "sigma": float(s)} for m, s in zip(mu, sigma, strict=True)]
    answers: dict[str, list[dict[str, Any]]] = {}
    for name, classes in targets.items():
        z = out[name].double()
        if classes is None:
            std, mean = float(tensors[f"norm.y_std.{name}"]), float(tensors[f"norm.y_mean.{name}"])
            answers[name] = [{"value": float(v)} for v in z.reshape(-1) * std + mean]
            continue
        p = torch.sigmoid(z) if z.shape[1] == 1 else torch.softmax(z, dim=1)
        probs = torch.cat([1 - p, p], dim=1) if z.shape[1] == 1 else p
        labels = [classes[int(i)] for i in probs.argmax(1)]
        answers[name] = [
            {"label": int(c) if c.isdigit() else c, "probabilities": [float(v) for v in row]}
            for c, row in zip(labels, probs, strict=True)
        ]
    if len(targets) == 1:
        return next(iter(answers.values()))
    return [{name: answers[name][i] for name in targets} for i in range(len(rows))]


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key, value in w.items():
            if isinstance(value, dict):
                assert_same([g[key]], [value])
            elif key == "label":
                assert g[key] == value
            else:
                assert g[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def sample_rows(spec: dict[str, Any], n: int, seed: int = 0) -> list[Any]:
    """`n` rows of the experiment's test split, as JSON lists in the dataset's units."""
    checked = validate_spec(spec).spec
    dataset = load_dataset(checked)
    test = split_of(checked, dataset)["test"]
    rows = np.random.default_rng(seed).choice(test, size=n, replace=False)
    return dataset.x[rows].tolist()


# -- fixtures ----------------------------------------------------------------------------------


def predict(client: httpx.Client, experiment_id: str, inputs: Any) -> httpx.Response:
    return client.post(f"/experiments/{experiment_id}/predictions", json={"inputs": inputs})


# -- predictions -------------------------------------------------------------------------------
