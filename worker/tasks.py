"""The named tasks. Thin: ids in, the row re-read and claimed in worker/runner.py."""

from __future__ import annotations

from celery import Task

from core.broker import TRAIN_GROUP_TASK, TRAIN_TASK
from core.logging import experiment_context
from core.webhooks import DELIVER_TASK, deliver
from worker.celery_app import celery_app
from worker.group_runner import run_group
from worker.runner import run_experiment


@celery_app.task(name=TRAIN_TASK, bind=True)
def train_experiment(self: Task, experiment_id: str) -> str:
    """Train one experiment to a terminal status; returns what happened (for the worker's log)."""
    # A redelivered message means the process that held it died (acks_late + reject on worker
    # lost, or the visibility timeout): its run may be taken over and resumed at once.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    with experiment_context(experiment_id):  # every record logged meanwhile carries experiment_id
        return run_experiment(experiment_id, worker=self.request.hostname or "worker", takeover=redelivered)


@celery_app.task(name=TRAIN_GROUP_TASK, bind=True)
def train_group(self: Task, experiment_ids: list[str]) -> dict[str, str]:
    """Train compatible experiments together as one stacked network; each ends as it would alone."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    with experiment_context(experiment_ids):  # every record logged meanwhile carries experiment_ids
        return run_group(list(experiment_ids), worker=self.request.hostname or "worker", takeover=redelivered)


@celery_app.task(name=DELIVER_TASK, time_limit=300)
def deliver_webhook(delivery_id: str) -> str:
    """One try of a signed webhook; the row says whether it is still due, so a duplicate is harmless."""
    return deliver(delivery_id)
