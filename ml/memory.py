"""How much memory a run needs to train, estimated from its checked spec without torch: the one
rule behind LABTRAIN_MAX_RUN_MEMORY_BYTES (a run refused at submission instead of failing at
allocation) and the group budget (`ml.grouping`, LABTRAIN_GROUP_MEMORY_BYTES).

Everything is float32 on the training device:
- the parameters, their gradients, and the optimizer's state (Adam/AdamW two buffers per
  parameter, RMSprop one and one more with momentum, SGD one with momentum, none without);
- two snapshots of the weights (the best epoch's, kept and served, and the last finite one);
- the activations of one batch: every layer's outputs (a convolution's before and after its
  pooling) for each row of the batch, twice for what backward keeps and computes;
- the dataset's splits, held whole on the device (inputs and targets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.datasets.base import DatasetError, DatasetInfo
from ml.datasets.split import split_sizes
from ml.layers import Conv, Dense, NetworkPlan, Stack

if TYPE_CHECKING:
    from ml.spec import ExperimentSpec

BYTES_PER_FLOAT = 4
SNAPSHOTS = 2  # the best epoch's weights and the last finite ones
BACKWARD_FACTOR = 2  # the forward outputs kept for backward, and their gradients


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one run's training memory, by what holds them."""

    state: int  # parameters, gradients, optimizer state, weight snapshots
    activations: int  # one batch, forward and backward
    data: int  # the dataset's splits on the device
    batch: int  # rows per step

    @property
    def total(self) -> int:
        return self.state + self.activations + self.data


def optimizer_copies(name: str, momentum: float | None) -> int:
    """Buffers per parameter the optimizer keeps."""
    moving = 1 if momentum else 0
    return {"adam": 2, "adamw": 2, "rmsprop": 1 + moving, "sgd": moving}.get(name, 2)


def activation_floats(plan: NetworkPlan) -> int:
    """Floats every layer outputs for one input row, summed over the trunk and the heads."""
    total = 0
    for stack, shape in [(plan.trunk, plan.input_shape), *((h, plan.trunk.output_shape) for h in plan.heads.values())]:
        total += _stack_floats(stack, shape)
    return total


def _stack_floats(stack: Stack, shape: tuple[int, ...]) -> int:
    total = 0
    for layer in stack.layers:
        if isinstance(layer, Conv):
            _, h, w = shape
            h, w = h - layer.kernel_size + 1, w - layer.kernel_size + 1
            total += layer.out_channels * h * w  # (batch, filters, h, w) before pooling
            if layer.pool:
                h, w = h // layer.pool, w // layer.pool
                total += layer.out_channels * h * w
            shape = (layer.out_channels, h, w)
        elif isinstance(layer, Dense):
            total += layer.out_features
            shape = (layer.out_features,)
    return total


def training_memory(spec: ExperimentSpec, info: DatasetInfo, plan: NetworkPlan) -> MemoryEstimate:
    """The estimated training memory of a checked spec (its dataset's description and network plan)."""
    split = spec.dataset.split
    try:
        train_rows = split_sizes(info.n_samples, split.val, split.test)["train"]
    except DatasetError:  # too few rows: refused elsewhere; estimate on all of them
        train_rows = info.n_samples
    batch = train_rows if spec.batch_size == "full" else min(int(spec.batch_size), train_rows)
    copies = 2 + optimizer_copies(spec.optimizer.name, spec.optimizer.momentum) + SNAPSHOTS
    data_floats = info.n_samples * (math.prod(info.input_shape) + len(info.targets))
    return MemoryEstimate(
        state=copies * plan.params * BYTES_PER_FLOAT,
        activations=BACKWARD_FACTOR * batch * activation_floats(plan) * BYTES_PER_FLOAT,
        data=data_floats * BYTES_PER_FLOAT,
        batch=batch,
    )


def readable(n: int) -> str:
    """Bytes for people: 1.5 GiB, 320.0 MiB."""
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def memory_error(spec: ExperimentSpec, info: DatasetInfo, plan: NetworkPlan, limit: int) -> dict[str, Any] | None:
    """The 422 item of a run whose estimated training memory is above `limit`, located at the
    field that would change it most; None when it fits."""
    m = training_memory(spec, info, plan)
    if m.total <= limit:
        return None
    largest = max(("activations", m.activations), ("state", m.state), ("data", m.data), key=lambda kv: kv[1])[0]
    loc, advice = {
        "activations": (["batch_size"], "lower batch_size (or narrow the widest layers)"),
        "state": (["model"], "use fewer or narrower layers"),
        "data": (["dataset"], "train on fewer samples"),
    }[largest]
    return {
        "loc": loc,
        "msg": f"the run needs an estimated {readable(m.total)} of memory to train, above the limit of "
        f"{readable(limit)} (LABTRAIN_MAX_RUN_MEMORY_BYTES): activations of a batch of {m.batch:,} rows "
        f"{readable(m.activations)}, parameters with their gradients and optimizer state {readable(m.state)}, "
        f"the dataset {readable(m.data)}; {advice}",
        "type": "too_much_memory",
    }
