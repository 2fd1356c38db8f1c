"""The worker's Celery app: `celery -A worker.celery_app worker` (see worker/run.py).

Tasks are idempotent (the database row is the truth and the claim is conditional), which is
what makes `acks_late` + `task_reject_on_worker_lost` safe: a message whose worker died is
delivered again and the run resumes from its checkpoint.
"""

from __future__ import annotations

from typing import Any

from celery.signals import celeryd_init, setup_logging, worker_process_init, worker_ready, worker_shutdown

from core.broker import build_celery
from core.db import dispose_engines
from core.logging import configure_logging
from core.settings import get_settings

settings = get_settings()

celery_app = build_celery(settings, "labtrain-worker")
celery_app.conf.update(
    include=["worker.tasks"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,  # long tasks: never hold a second message while training
    task_soft_time_limit=settings.max_run_seconds,  # recorded as failed by the task
    task_time_limit=settings.max_run_seconds + 120,  # the hard stop if the soft one is ignored
    worker_concurrency=settings.worker_concurrency,
    worker_hijack_root_logger=False,
    worker_max_memory_per_child=None,
    worker_cancel_long_running_tasks_on_connection_loss=False,
    # A pool child says it is up after _init_child; Celery's default of 4 s was too short on a
    # busy host when children imported torch themselves: it killed each replacement child and
    # forked another, 16 in 80 s, the experiment's message waiting (load 14 on two cores).
    worker_proc_alive_timeout=120.0,
)


@celeryd_init.connect  # before Celery's first warning (running as root); again when it sets up logging
@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Text or JSON (LABTRAIN_LOG_FORMAT) on stderr at LABTRAIN_LOG_LEVEL, instead of Celery's own setup."""
    configure_logging(settings.log_level, settings.log_format)


@celeryd_init.connect
def _preload_training(**_: Any) -> None:
    """The main process imports the training code (torch) once, before it forks its pool: a new
    child, the first or one replacing a child that died, is up at once instead of importing torch
    itself (9 s at load 14 on two cores, long enough for the reconciler to think its message lost).
    Importing runs no torch operation, so no thread pool or device exists yet to be forked."""
    import ml.train  # noqa: F401


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    """A forked pool child: drop inherited database connections (the training code is already
    imported: _preload_training)."""
    dispose_engines()
    import ml.train  # noqa: F401  # a no-op after the preload; kept for pools started without it


@worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    """The reconciler thread (worker/reconciler.py), in the worker's main process only: pool
    children never receive this signal."""
    from worker import reconciler

    reconciler.start(celery_app, settings)


@worker_shutdown.connect
def _stop_reconciler(**_: Any) -> None:
    from worker import reconciler

    reconciler.stop()
