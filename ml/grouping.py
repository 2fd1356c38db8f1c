"""Which experiments can train together (`ml.group.train_group`), decided without torch: the API
plans a sweep's groups when it queues them.

Members of a group share the dataset and its split, the layer structure (shapes and
activations), the loss, the batch size, the optimizer kind and the device; they may differ in
seed, learning rate, momentum, weight decay, epochs and early stopping.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence

from ml.memory import training_memory
from ml.spec import CheckedSpec


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
    """One member's memory in a group: the run's training-memory estimate (`ml.memory`, the rule
    LABTRAIN_MAX_RUN_MEMORY_BYTES applies to a run alone), its own copy of the data included."""
    return training_memory(checked.spec, checked.info, checked.plan).total


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
