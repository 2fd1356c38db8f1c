"""Workers never train an experiment twice, and a killed worker's experiment resumes."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC
from typing import Any

import psutil
import pytest
from sqlalchemy import func, select

from core.broker import build_celery
from core.db import get_engine, session_factory
from core.enqueue import enqueue_experiment
from core.settings import Settings
from core.tables import EpochMetric
from tests.conftest import Stack, wait_for
from tests.integration.test_experiments import tiny_spec

pytestmark = pytest.mark.integration


def _celery(stack: Stack) -> Any:
    return build_celery(Settings(redis_url=stack.redis_url, database_url=stack.database_url), "labtrain-test")


@pytest.mark.timeout(120)
def test_two_workers_never_train_the_same_experiment_twice(stack: Stack) -> None:
    celery = _celery(stack)
    ids = []
    for i in range(6):
        exp = stack.submit(tiny_spec(f"pair-{i}", epochs=15))
        enqueue_experiment(celery, exp["id"], "cpu")  # a duplicate delivery of every message
        ids.append(exp["id"])
    finished = [stack.wait_terminal(i, timeout=90) for i in ids]
    assert {e["status"] for e in finished} == {"succeeded"}
    assert all(e["attempt"] == 1 for e in finished)
    for e in finished:
        assert [m["epoch"] for m in stack.epochs(e["id"])] == list(range(1, 16))
    assert {e["worker"] for e in finished} == set(stack.workers)  # both workers took part

    # A delivery for a finished experiment finds nothing to claim and changes nothing.
    enqueue_experiment(celery, ids[0], "cpu")
    wait_for(
        lambda: stack.all_worker_logs().count(f"experiment {ids[0]}: nothing to claim") >= 2,
        30,
        what="the late delivery to be skipped",
    )
    again = stack.experiment(ids[0])
    assert again["attempt"] == 1
    assert again["finished_at"] == finished[0]["finished_at"]
    assert len(stack.epochs(ids[0])) == 15
    celery.close()


def _pool_child(stack: Stack, hostname: str) -> psutil.Process:
    children = psutil.Process(stack.workers[hostname].pid).children()
    assert len(children) == 1, children
    return children[0]


@pytest.mark.timeout(150)
def test_killed_worker_resumes_from_its_checkpoint(stack: Stack) -> None:
    exp = stack.submit(tiny_spec("killed", epochs=1500))
    running = wait_for(
        lambda: (e := stack.experiment(exp["id"]))["epochs_done"] >= 200 and e,
        60,
        what="200 epochs (several checkpoints)",
    )
    child = _pool_child(stack, running["worker"])
    killed_at = time.time()
    os.kill(child.pid, signal.SIGKILL)

    done = stack.wait_terminal(exp["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempt"] == 2  # claimed again after the redelivery
    assert done["epochs_done"] == 1500
    epochs = stack.epochs(exp["id"])
    assert [e["epoch"] for e in epochs] == list(range(1, 1501))  # continuous, no epoch twice

    # Resumed, not restarted: the first epochs are still the rows the killed process wrote.
    factory = session_factory(get_engine(stack.database_url))
    with factory() as session:
        first_written = session.scalar(
            select(func.min(EpochMetric.created_at)).where(EpochMetric.experiment_id == exp["id"])
        )
    if first_written.tzinfo is None:  # SQLite hands back naive UTC
        first_written = first_written.replace(tzinfo=UTC)
    assert first_written.timestamp() < killed_at
    kept = sum(1 for e in epochs if e["epoch"] <= 200)
    assert kept == 200
    assert "(resumed)" in stack.all_worker_logs()
