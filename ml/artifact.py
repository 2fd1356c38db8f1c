"""The two blobs training produces, both safetensors (tensors plus a JSON header, never a pickle):

- the artifact: the trained weights, the normalized spec, the dataset's description and the
  normalization statistics; everything `ml.predict` needs to rebuild and run the network;
- the checkpoint: the flat parameters, the optimizer state and the loop's bookkeeping, from which
  a run resumes exactly where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load, save

from ml.datasets import DatasetInfo, Target
from ml.networks import Network

ARTIFACT_FORMAT = "labtrain-artifact/1"
CHECKPOINT_FORMAT = "labtrain-checkpoint/1"


def info_from_dict(d: dict[str, Any]) -> DatasetInfo:
    targets = tuple(Target(name, tuple(c) if c is not None else None) for name, c in d["targets"].items())
    return DatasetInfo(
        name=d["name"],
        task=d["task"],
        input_shape=tuple(d["input_shape"]),
        features=tuple(d["features"]),
        targets=targets,
        n_samples=d["n_samples"],
        description=d.get("description", ""),
    )


def save_artifact(
    network: Network, spec: dict[str, Any], info: DatasetInfo, norm: dict[str, torch.Tensor], extra: dict[str, Any]
) -> bytes:
    tensors = {f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in network.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in norm.items()})
    meta = {
        "format": ARTIFACT_FORMAT,
        "spec": json.dumps(spec),
        "info": json.dumps(info.to_dict()),
        "extra": json.dumps(extra),
    }
    return save(tensors, metadata=meta)


@dataclass
class Artifact:
    spec: dict[str, Any]
    info: DatasetInfo
    weights: dict[str, torch.Tensor]  # the network's state dict
    norm: dict[str, torch.Tensor]
    extra: dict[str, Any]


def read_artifact(blob: bytes) -> Artifact:
    meta = _metadata(blob)
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"not a labtrain artifact (format {meta.get('format')!r})")
    tensors = load(blob)
    return Artifact(
        spec=json.loads(meta["spec"]),
        info=info_from_dict(json.loads(meta["info"])),
        weights={k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")},
        norm={k: v for k, v in tensors.items() if k.startswith("norm.")},
        extra=json.loads(meta["extra"]),
    )


def save_checkpoint(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> bytes:
    cpu = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    return save(cpu, metadata={"format": CHECKPOINT_FORMAT, "state": json.dumps(state)})


def read_checkpoint(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    meta = _metadata(blob)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a labtrain checkpoint (format {meta.get('format')!r})")
    return load(blob), json.loads(meta["state"])


def _metadata(blob: bytes) -> dict[str, str]:
    # safetensors layout: 8-byte little-endian header length, then the JSON header.
    if len(blob) < 8:
        raise ValueError("not a safetensors blob")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ValueError("not a safetensors blob")
    header = json.loads(blob[8 : 8 + n])
    return header.get("__metadata__", {})
