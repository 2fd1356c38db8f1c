"""Send work to the workers, by task name, after the row it names is committed."""

from __future__ import annotations

from typing import Any, Literal

from celery import Celery

from core.broker import TRAIN_GROUP_TASK, TRAIN_TASK
from core.settings import Settings

Queue = Literal["cpu", "gpu"]


def queue_for(spec_device: str, settings: Settings) -> Queue:
    """`gpu` for a spec that asks for CUDA, or for `auto` when the service's device is CUDA."""
    if spec_device == "cuda" or (spec_device == "auto" and settings.device == "cuda"):
        return "gpu"
    return "cpu"


def enqueue_experiment(celery: Celery, experiment_id: str, queue: str) -> Any:
    """Ask a worker of `queue` to train `experiment_id`. Call it only after the commit: the
    task re-reads the row and a worker may start before the caller's next line."""
    return celery.send_task(TRAIN_TASK, args=[experiment_id], queue=queue)


def enqueue_group(celery: Celery, experiment_ids: list[str], queue: str) -> Any:
    """Ask one worker of `queue` to train these compatible experiments together (one stacked
    network); a group of one is sent as a single experiment. After the commit only."""
    if len(experiment_ids) == 1:
        return enqueue_experiment(celery, experiment_ids[0], queue)
    return celery.send_task(TRAIN_GROUP_TASK, args=[list(experiment_ids)], queue=queue)
