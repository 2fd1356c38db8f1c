"""The one CPU rule of training: how many torch threads a run gets, and the process-wide
switches it sets while it trains (`ml.train.train`, `ml.group.train_group` and the worker
all ask here, so the rule cannot drift between them)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ml.layers import Conv
from ml.spec import CheckedSpec

CORES = torch.get_num_threads()  # PyTorch's own choice (physical cores), read before any run changes it
SMALL_MODEL_PARAMS = 200_000  # at or below this one thread is fastest: a step is overhead, not arithmetic
SMALL_CONV_PARAMS = 1_000_000  # the same for networks with convolutions


def has_conv(checked: CheckedSpec) -> bool:
    """True when any stack of the network (trunk, each head, a Gaussian model's sigma) convolves."""
    stacks = (checked.plan.trunk, *checked.plan.heads.values())
    return any(isinstance(layer, Conv) for stack in stacks for layer in stack.layers)


def thread_count(checked: CheckedSpec, members: int = 1, *, requested: int | None = None, processes: int = 1) -> int:
    """Torch threads for training `members` copies of `checked` in one process.

    `requested` (LABTRAIN_TORCH_THREADS; 0 or None: choose) wins. Small networks train on one
    thread: the work per operation is tiny, and the other training processes on this host want
    their core (measured in bench/README.md: the report's CNN ran 5-50x slower on two threads
    beside another busy process). Large ones share this host's cores among `processes`."""
    if requested:
        return requested
    limit = SMALL_CONV_PARAMS if has_conv(checked) else SMALL_MODEL_PARAMS
    if checked.param_count * members <= limit:
        return 1
    return max(1, CORES // processes)


@contextlib.contextmanager
def cpu_settings(device: torch.device, threads: int) -> Iterator[None]:
    """Thread count and oneDNN for this run only; oneDNN's setup per call costs more than it
    saves on small convolutions (measured in bench/README.md)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a documented switch
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.backends.mkldnn.enabled = before[1]
