"""The Celery app as the API and the CLI see it: it knows the broker and the queues, nothing of
the tasks' code, so sending a task or pinging workers never imports torch. The worker's app
(worker/celery_app.py) is built from the same function and adds the worker's settings."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from core.settings import Settings

TRAIN_TASK = "labtrain.train_experiment"
TRAIN_GROUP_TASK = "labtrain.train_group"
QUEUES = ("cpu", "gpu")
VISIBILITY_MARGIN_SECONDS = 3600  # a message is redelivered only well after the longest allowed run


def build_celery(settings: Settings, name: str = "labtrain") -> Celery:
    app = Celery(name, broker=settings.resolved_redis_url, set_as_current=False)
    app.conf.update(
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="cpu",
        task_create_missing_queues=False,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,  # results live in the database
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.max_run_seconds + VISIBILITY_MARGIN_SECONDS},
        broker_pool_limit=10,
        # A POST whose Redis is down answers 503 within seconds instead of hanging.
        broker_connection_timeout=2.0,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.5},
        worker_send_task_events=False,
    )
    return app
