"""A run whose training process keeps dying ends `failed` after `LABTRAIN_MAX_ATTEMPTS`, single
and grouped, instead of being delivered again forever; the worker goes on with the next one."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import select

from core.db import get_engine, session_factory
from core.tables import Artifact
from tests.conftest import Stack, start_stack, wait_for
from tests.integration.faults import RedisServer, data_dir
from tests.integration.test_experiments import tiny_spec
from tests.integration.test_sweeps import base_spec, post_sweep

pytestmark = pytest.mark.integration


# -- a run whose process keeps dying ----------------------------------------------------------


def _kill_training_process(stack: Stack, hostname: str) -> None:
    """SIGKILL the worker's pool child (the process training), as the kernel's OOM killer would;
    the worker's main process lives on, and Celery gives the message back to the queue."""
    children = wait_for(lambda: psutil.Process(stack.workers[hostname].pid).children(), 30, what="a pool child")
    assert len(children) == 1, children
    os.kill(children[0].pid, signal.SIGKILL)


def _kill_every_attempt(stack: Stack, ids: list[str], attempts: int) -> None:
    """Kill the process training `ids` in each of their `attempts` attempts, each mid-run."""
    for attempt in range(1, attempts + 1):

        def training(attempt: int = attempt) -> list[dict[str, Any]] | None:
            # Every member claimed in this attempt, and the process training: members resumed from
            # different checkpoints train one sub-group after another, so one may still wait.
            rows = [stack.experiment(i) for i in ids]
            claimed = all(r["status"] == "running" and r["attempt"] == attempt for r in rows)
            return rows if claimed and any(r["epochs_done"] >= 5 for r in rows) else None

        rows = wait_for(training, 90, interval=0.05, what=f"attempt {attempt} to train")
        _kill_training_process(stack, next(r["worker"] for r in rows if r["epochs_done"] >= 5))


@pytest.mark.timeout(300)
def test_a_run_whose_process_dies_in_every_attempt_ends_failed(
    fresh_db: str, own_redis: RedisServer, tmp_path: Path
) -> None:
    # Only deaths make attempts here: the heartbeat is never stale (a loaded host could let a
    # live run look lost after FAST_RECOVERY's 3 s, and its takeover would count as an attempt);
    # each dead child's message comes back at once (task_reject_on_worker_lost), redelivered.
    env = {"LABTRAIN_RECONCILE_SECONDS": "1", "LABTRAIN_HEARTBEAT_STALE_SECONDS": "60", "LABTRAIN_MAX_ATTEMPTS": "2"}
    with start_stack(fresh_db, own_redis.url, data_dir(tmp_path), workers=1, env_extra=env) as stack:
        # A single run, then a group: the same cap for both (worker/runner.py claim_run).
        doomed = stack.submit(tiny_spec("doomed", epochs=20_000))["id"]
        _kill_every_attempt(stack, [doomed], 2)
        sweep = post_sweep(stack, {"name": "doomed-group", "base": base_spec(epochs=20_000),
                                   "grid": {"optimizer.lr": [0.005, 0.01]}})  # fmt: skip
        members = sweep["experiment_ids"]
        _kill_every_attempt(stack, members, 2)

        for experiment_id in [doomed, *members]:
            done = stack.wait_terminal(experiment_id, timeout=120)
            assert done["status"] == "failed"
            assert done["attempt"] == 2  # never claimed a third time
            assert "each of its 2 attempts" in done["error"]
            assert "LABTRAIN_MAX_ATTEMPTS=2" in done["error"]
            assert done["epochs_done"] < 20_000
            # Nothing is served from a run that never finished, and its checkpoint is gone.
            assert stack.client.get(f"/experiments/{experiment_id}/model").status_code == 409
            with session_factory(get_engine(stack.database_url))() as session:
                kinds = session.scalars(select(Artifact.kind).where(Artifact.experiment_id == experiment_id))
                assert list(kinds) == []
        assert stack.all_worker_logs().count("not tried again") == 3

        # The worker is fine: the next experiment trains.
        after = stack.submit(tiny_spec("after", epochs=5))["id"]
        assert stack.wait_terminal(after, timeout=60)["status"] == "succeeded"
        # The message of a given-up run is gone: no further attempt after the reconciler's passes.
        time.sleep(4)
        assert stack.experiment(doomed)["attempt"] == 2
