"""Group training under faults: a group whose training process is killed resumes every member
from its checkpoint, and cancelling one grouped member stops only that member; a grouped member's
live event stream (its epochs are written in batches) still has every epoch once, in order."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC
from typing import Any

import psutil
import pytest
from sqlalchemy import func, select

from core.db import get_engine, session_factory
from core.tables import Artifact, EpochMetric
from tests.conftest import Stack, wait_for
from tests.integration.test_events import assert_ids_never_decrease, stream
from tests.integration.test_sweeps import base_spec, post_sweep, wait_sweep

pytestmark = pytest.mark.integration


def group_of_four(stack: Stack, name: str, epochs: int) -> tuple[str, list[str]]:
    """A sweep of four compatible members (2 learning rates × 2 seeds), planned as one group."""
    body = {"name": name, "base": base_spec(epochs=epochs, optimizer={"name": "adam", "lr": 0.01}),
            "grid": {"optimizer.lr": [0.005, 0.01]}, "repeats": 2}  # fmt: skip
    sweep = post_sweep(stack, body)
    assert len(sweep["experiment_ids"]) == 4
    return sweep["id"], sweep["experiment_ids"]


def all_past(stack: Stack, ids: list[str], epochs: int) -> list[dict[str, Any]] | None:
    members = [stack.experiment(i) for i in ids]
    return members if all(m["status"] == "running" and m["epochs_done"] >= epochs for m in members) else None


def group_lines(stack: Stack, experiment_id: str) -> list[str]:
    return [line for line in stack.all_worker_logs().splitlines() if "group of" in line and experiment_id in line]


def checkpointed(stack: Stack, ids: list[str]) -> bool:
    """Every member has a stored checkpoint (the group writes them member by member)."""
    factory = session_factory(get_engine(stack.database_url))
    with factory() as session:
        found = session.scalars(
            select(Artifact.experiment_id).where(Artifact.experiment_id.in_(ids), Artifact.kind == "checkpoint")
        )
        return set(found) == set(ids)


def first_epoch_written(stack: Stack, experiment_id: str) -> float:
    factory = session_factory(get_engine(stack.database_url))
    with factory() as session:
        first = session.scalar(
            select(func.min(EpochMetric.created_at)).where(EpochMetric.experiment_id == experiment_id)
        )
    if first.tzinfo is None:  # SQLite hands back naive UTC
        first = first.replace(tzinfo=UTC)
    return first.timestamp()


@pytest.mark.timeout(240)
def test_killed_group_resumes_every_member_from_its_checkpoint(stack: Stack) -> None:
    epochs = 6000  # a few seconds for the group: the kill lands mid-run
    sweep_id, ids = group_of_four(stack, "killed-group", epochs)
    running = wait_for(
        lambda: checkpointed(stack, ids) and all_past(stack, ids, 150),
        90,
        interval=0.05,
        what="150 epochs and a checkpoint of every member",
    )
    assert len({m["worker"] for m in running}) == 1  # one task trains the four
    assert len(group_lines(stack, ids[0])) == 1
    children = psutil.Process(stack.workers[running[0]["worker"]].pid).children()
    assert len(children) == 1, children
    killed_at = time.time()
    os.kill(children[0].pid, signal.SIGKILL)  # the process training the group, mid-epoch

    done = wait_sweep(stack, sweep_id, timeout=180)
    assert done["counts"] == {"succeeded": 4}
    for exp_id in ids:
        exp = stack.experiment(exp_id)
        assert exp["attempt"] == 2, exp  # claimed again after the redelivery
        assert exp["epochs_done"] == epochs
        assert [e["epoch"] for e in stack.epochs(exp_id)] == list(range(1, epochs + 1))  # each epoch once
        # Resumed, not restarted: its first epochs are still the rows the killed process wrote.
        assert first_epoch_written(stack, exp_id) < killed_at
    assert len(group_lines(stack, ids[0])) >= 2  # trained again as a group (or groups, by checkpoint epoch)


@pytest.mark.timeout(180)
def test_cancelling_one_grouped_member_stops_only_that_member(stack: Stack) -> None:
    epochs = 3000  # several seconds: time to see every member running, then cancel one
    sweep_id, ids = group_of_four(stack, "cancel-one", epochs)
    wait_for(lambda: all_past(stack, ids, 20), 90, interval=0.1, what="20 epochs of every member")
    response = stack.client.post(f"/experiments/{ids[1]}/cancel")
    assert response.status_code == 202, response.text

    done = wait_sweep(stack, sweep_id, timeout=150)
    assert done["counts"] == {"succeeded": 3, "cancelled": 1}
    cancelled = stack.experiment(ids[1])
    assert cancelled["status"] == "cancelled"
    assert 20 <= cancelled["epochs_done"] < epochs
    assert [e["epoch"] for e in stack.epochs(ids[1])] == list(range(1, cancelled["epochs_done"] + 1))
    for exp_id in (ids[0], *ids[2:]):
        exp = stack.experiment(exp_id)
        assert exp["status"] == "succeeded", exp["error"]
        assert exp["attempt"] == 1
        assert [e["epoch"] for e in stack.epochs(exp_id)] == list(range(1, epochs + 1))
        predicted = stack.client.post(f"/experiments/{exp_id}/predictions", json={"inputs": [[0.1, 0.2]]})
        assert predicted.status_code == 200, predicted.text
    assert len(group_lines(stack, ids[0])) == 1  # one group, never restarted


@pytest.mark.timeout(120)
def test_a_grouped_member_streams_every_epoch_once_in_order_then_its_terminal_status(stack: Stack) -> None:
    epochs = 600  # a few seconds: the worker writes the group's epochs in several batches meanwhile
    sweep_id, ids = group_of_four(stack, "group-events", epochs)
    events = stream(stack.client, f"/experiments/{ids[2]}/events")

    epoch_events = [e for e in events if e.event == "epoch"]
    assert [e.id for e in epoch_events] == list(range(1, epochs + 1))
    assert [e.data for e in epoch_events] == stack.epochs(ids[2])  # the /metrics rows, exactly
    assert events[-1].event == "status"
    assert events[-1].data == {"status": "succeeded", "epochs_done": epochs, "epochs": epochs, "error": None}
    statuses = [e for e in events if e.event == "status"]
    assert statuses[0].data["status"] in {"queued", "running"}  # connected before it ended: live
    for status in statuses:  # a status's id is the epochs done when it was sent
        assert status.id == status.data["epochs_done"] == len([e for e in epoch_events if e.id <= status.id])
    assert_ids_never_decrease(events)
    assert wait_sweep(stack, sweep_id, timeout=60)["counts"] == {"succeeded": 4}
