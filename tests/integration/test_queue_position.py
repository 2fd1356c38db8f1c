"""A queued experiment says how much work is ahead of it: `queue_position`, the experiments
queued before it on its queue (any owner's), gone once a worker claims it."""

from __future__ import annotations

import pytest

from tests.conftest import Stack
from tests.integration.test_experiments import parked_spec, tiny_spec

pytestmark = pytest.mark.integration


@pytest.mark.timeout(90)
def test_queue_position_counts_the_experiments_ahead_and_moves_up(stack: Stack) -> None:
    # The gpu queue has no worker in the tests: these stay queued, one behind the other.
    ids = [stack.submit(parked_spec(f"parked-{i}"))["id"] for i in range(3)]
    positions = [stack.experiment(i)["queue_position"] for i in ids]
    assert positions[1] == positions[0] + 1
    assert positions[2] == positions[0] + 2

    assert stack.client.post(f"/experiments/{ids[0]}/cancel").status_code == 202
    assert stack.experiment(ids[0])["queue_position"] is None  # cancelled: not on the queue
    assert stack.experiment(ids[1])["queue_position"] == positions[0]
    assert stack.experiment(ids[2])["queue_position"] == positions[0] + 1
    for i in ids[1:]:
        stack.client.post(f"/experiments/{i}/cancel")


@pytest.mark.timeout(90)
def test_a_claimed_experiment_has_no_queue_position(stack: Stack) -> None:
    created = stack.submit(tiny_spec("positioned", epochs=5))
    assert isinstance(created["queue_position"], int)  # the submission answer says it too
    done = stack.wait_terminal(created["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["queue_position"] is None
