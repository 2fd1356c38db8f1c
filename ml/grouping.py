"""Which experiments can train together (`ml.group.train_group`), decided without torch: the API
plans a sweep's groups when it queues them.

Members of a group share the dataset and its split, the layer structure (shapes and
activations), the loss, the batch size, the optimizer kind and the device; they may differ in
seed, learning rate, momentum, weight decay, epochs and early stopping.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Sequence

from ml.layers import Conv, Dense
from ml.spec import CheckedSpec

BYTES_PER_FLOAT = 4
STATE_COPIES = 7  # parameters, gradients, up to three optimizer buffers, last finite and best weights


def group_key(checked: CheckedSpec) -> str:
    """Specs with the same key can train in one group."""
    s = checked.spec
    return json.dumps(
        {
            "dataset": s.dataset.model_dump(mode="json"),
            "plan": repr(checked.plan),  # layer shapes and activations
            "loss": s.loss,
            "batch_size": s.batch_size,
            "optimizer": s.optimizer.name,
            "device": s.device,
        },
        sort_keys=True,
    )


def member_bytes(checked: CheckedSpec) -> int:
    """A generous estimate of one member's memory in a group: its parameter state, its own
    shuffled copy of the training inputs, and the activations of a batch (kept for backward)."""
    s = checked.spec
    info = checked.info
    features = math.prod(info.input_shape)
    train_rows = max(1, round(info.n_samples * (1 - s.dataset.split.val - s.dataset.split.test)))
    batch = train_rows if s.batch_size == "full" else min(int(s.batch_size), train_rows)
    activations = 0
    for stack in (checked.plan.trunk, *checked.plan.heads.values()):
        for layer in stack.layers:
            if isinstance(layer, Dense):
                activations += layer.out_features
            elif isinstance(layer, Conv):
                activations += layer.out_channels * features  # an upper bound per sample
    floats = STATE_COPIES * checked.param_count + train_rows * features + 3 * batch * activations
    return floats * BYTES_PER_FLOAT


def plan_groups(
    members: Sequence[tuple[Hashable, CheckedSpec]], *, max_members: int, memory_bytes: int
) -> list[list[Hashable]]:
    """Partition members (id, checked spec) into groups of one key, each at most `max_members`
    long and within `memory_bytes`; order is kept within a group. A member alone is a group of one."""
    by_key: dict[str, list[tuple[Hashable, int]]] = {}
    for ident, checked in members:
        by_key.setdefault(group_key(checked), []).append((ident, member_bytes(checked)))
    groups: list[list[Hashable]] = []
    for items in by_key.values():
        current: list[Hashable] = []
        used = 0
        for ident, size in items:
            if current and (len(current) >= max_members or used + size > memory_bytes):
                groups.append(current)
                current, used = [], 0
            current.append(ident)
            used += size
        groups.append(current)
    return groups
