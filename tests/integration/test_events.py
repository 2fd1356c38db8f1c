"""Server-Sent Events through the real API over HTTP, of trainings by real workers, on SQLite and
PostgreSQL: every epoch once and in order, the terminal status last, resuming with
Last-Event-ID, late clients, sweeps, refusals, and owners kept apart (plots too)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import TERMINAL, Stack, wait_for
from tests.integration.test_auth import keyed_api  # noqa: F401 (a fixture: a second API with two owners' keys)
from tests.integration.test_experiments import parked_spec, tiny_spec
from tests.integration.test_sweeps import base_spec, post_sweep

pytestmark = pytest.mark.integration


@dataclass
class Event:
    event: str
    id: int
    data: dict[str, Any]


def read_events(lines: Iterator[str]) -> Iterator[Event]:
    """Parse a text/event-stream: fields until a blank line; comments (pings) skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield Event(fields.get("event", "message"), int(fields["id"]), json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


def stream(
    client: httpx.Client, path: str, last_event_id: str | None = None, stop: int | None = None, **headers: str
) -> list[Event]:
    """The events of one connection until the server ends it, or `stop` epoch events (then the
    client disconnects)."""
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[Event] = []
    with client.stream("GET", path, headers=headers, timeout=httpx.Timeout(30.0, read=60.0)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in read_events(response.iter_lines()):
            events.append(event)
            if stop is not None and sum(e.event == "epoch" for e in events) >= stop:
                break
    return events


def assert_ids_never_decrease(events: list[Event]) -> None:
    ids = [e.id for e in events]
    assert ids == sorted(ids), ids


@pytest.mark.timeout(120)
def test_a_training_streams_every_epoch_once_in_order_then_its_terminal_status(stack: Stack) -> None:
    spec = tiny_spec("events-live", epochs=60, dataset={"name": "spirals", "params": {"n_samples": 2000}},
                     batch_size=32)  # fmt: skip
    experiment = stack.submit(spec)
    events = stream(stack.client, f"/experiments/{experiment['id']}/events")

    epochs = [e for e in events if e.event == "epoch"]
    statuses = [e for e in events if e.event == "status"]
    assert [e.id for e in epochs] == list(range(1, 61))
    assert [e.data["epoch"] for e in epochs] == list(range(1, 61))
    assert [e.data for e in epochs] == stack.epochs(experiment["id"])  # the /metrics rows, exactly
    assert set(epochs[0].data) == {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds"}
    assert {e.event for e in events} == {"epoch", "status"}

    assert events[-1].event == "status"
    assert events[-1].data == {"status": "succeeded", "epochs_done": 60, "epochs": 60, "error": None}
    assert events[-1].id == 60
    assert statuses[0].data["status"] in {"queued", "running"}  # connected while it was starting: live
    order = [s.data["status"] for s in statuses]  # each status once, in the order a run goes through them
    assert order == sorted(set(order), key=["queued", "running", "succeeded"].index)
    for status in statuses:  # a status's id is the epochs done when it was sent
        assert status.id == status.data["epochs_done"] == len([e for e in epochs if e.id <= status.id])
    assert_ids_never_decrease(events)


@pytest.mark.timeout(120)
def test_a_client_resumes_with_last_event_id_and_misses_nothing(stack: Stack) -> None:
    spec = tiny_spec("events-resume", epochs=150, dataset={"name": "spirals", "params": {"n_samples": 2000}},
                     batch_size=32)  # fmt: skip
    experiment_id = stack.submit(spec)["id"]
    url = f"/experiments/{experiment_id}/events"
    first = stream(stack.client, url, stop=5)  # then the client drops the connection
    seen = [e for e in first if e.event == "epoch"]
    assert [e.id for e in seen] == [1, 2, 3, 4, 5]
    rest = stream(stack.client, url, last_event_id=str(first[-1].id))
    epochs = seen + [e for e in rest if e.event == "epoch"]
    assert [e.id for e in epochs] == list(range(1, 151))  # every epoch exactly once, in order
    assert rest[-1].event == "status"
    assert rest[-1].data["status"] == "succeeded"
    assert rest[-1].id == 150
    assert_ids_never_decrease(first + rest)
    assert [e.data for e in epochs] == stack.epochs(experiment_id)

    # A client that connects after the end gets what it missed, then the terminal status.
    late = stream(stack.client, url)
    assert [e.id for e in late if e.event == "epoch"] == list(range(1, 151))
    assert [(e.event, e.data["status"]) for e in late if e.event == "status"] == [("status", "succeeded")]
    caught_up = stream(stack.client, url, last_event_id="150")
    assert [(e.event, e.id, e.data["status"]) for e in caught_up] == [("status", 150, "succeeded")]
    tail = stream(stack.client, url, last_event_id="147")
    assert [(e.event, e.id) for e in tail] == [("epoch", 148), ("epoch", 149), ("epoch", 150), ("status", 150)]


@pytest.mark.timeout(60)
def test_a_cancelled_experiment_ends_its_stream_and_bad_requests_are_refused(stack: Stack) -> None:
    parked = stack.submit(parked_spec("events-parked"))["id"]  # stays queued: no test worker serves the gpu queue
    with stack.client.stream("GET", f"/experiments/{parked}/events", timeout=httpx.Timeout(30.0)) as response:
        assert response.status_code == 200
        events = read_events(response.iter_lines())
        opening = next(events)
        assert (opening.event, opening.id) == ("status", 0)
        assert opening.data == {"status": "queued", "epochs_done": 0, "epochs": 40, "error": None}
        assert stack.client.post(f"/experiments/{parked}/cancel").status_code == 202
        rest = list(events)  # the server ends the stream after the terminal status
    assert [(e.event, e.data["status"]) for e in rest] == [("status", "cancelled")]

    for value in ("abc", "-1", "1.5", "9" * 5 + "x"):
        response = stack.client.get(f"/experiments/{parked}/events", headers={"Last-Event-ID": value})
        assert response.status_code == 400, value
        body = response.json()
        assert body["error"] == "InvalidLastEventId"
        assert repr(value) in body["detail"]
    response = stack.client.get("/experiments/nope/events")
    assert response.status_code == 404
    assert response.json() == {"error": "ExperimentNotFound", "detail": "no experiment with id 'nope'"}
    response = stack.client.get("/sweeps/nope/events")
    assert response.status_code == 404
    assert response.json()["error"] == "SweepNotFound"
    assert stack.client.get("/sweeps/nope/events", headers={"Last-Event-ID": "x"}).status_code == 400


@pytest.mark.timeout(120)
def test_a_sweep_streams_its_members_until_it_is_finished(stack: Stack) -> None:
    sweep = post_sweep(stack, {
        "name": "events-sweep",
        "base": base_spec(epochs=12),
        "variants": [{"name": "a"}, {"name": "b", "model.neurons": 16}, {"name": "c", "epochs": 6}],
    })  # fmt: skip
    url = f"/sweeps/{sweep['id']}/events"
    events = stream(stack.client, url)
    assert_ids_never_decrease(events)
    members = {m["experiment_id"]: m["name"] for m in sweep["members"]}
    last: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.event == "experiment":
            previous = last.get(e.data["experiment_id"])
            if previous is not None:  # a member event is sent only when its state changed
                assert (e.data["status"], e.data["epochs_done"]) != (previous["status"], previous["epochs_done"])
            last[e.data["experiment_id"]] = e.data
    assert set(last) == set(members)
    for experiment_id, data in last.items():
        assert data["name"] == members[experiment_id]
        assert data["status"] == "succeeded"
        assert data["epochs_done"] == data["epochs"] == (6 if data["name"] == "c" else 12)
        assert data["metrics"]["val_accuracy"] == stack.experiment(experiment_id)["metrics"]["latest"]["val_accuracy"]
    final = events[-1]
    assert final.event == "status"
    assert final.data == {"status": "finished", "counts": {"succeeded": 3}, "size": 3, "epochs_done": 30,
                          "epochs": 30}  # fmt: skip
    assert final.id == 30 + 3 * 2  # epochs done, plus 2 for each ended member

    # Reconnecting (here after the end) gives every member's state once more, then the status.
    again = stream(stack.client, url, last_event_id=str(final.id))
    assert sorted(e.data["experiment_id"] for e in again if e.event == "experiment") == sorted(members)
    assert [e.event for e in again][-1] == "status"
    assert again[-1].data == final.data


@pytest.mark.timeout(120)
def test_another_owners_plots_and_events_are_not_found(keyed_api: httpx.Client) -> None:  # noqa: F811
    alice, bob = {"Authorization": "Bearer key-a"}, {"X-API-Key": "key-b"}
    created = keyed_api.post("/experiments", json=tiny_spec("alice-plots", epochs=5), headers=alice)
    assert created.status_code == 202, created.text
    experiment_id = created.json()["id"]
    swept = keyed_api.post("/sweeps", json={"base": base_spec(epochs=3), "variants": [{"name": "x"}]}, headers=alice)
    assert swept.status_code == 202, swept.text
    sweep_id = swept.json()["id"]

    def ended() -> bool:
        exp = keyed_api.get(f"/experiments/{experiment_id}", headers=alice).json()
        sweep = keyed_api.get(f"/sweeps/{sweep_id}", headers=alice).json()
        return exp["status"] in TERMINAL and sweep["status"] == "finished"

    wait_for(ended, 60, interval=0.1, what="alice's experiment and sweep")
    experiment_paths = [f"/experiments/{experiment_id}/{p}" for p in (
        "plots/learning-curves.png", "plots/decision-boundary.png", "plots/confusion.png",
        "plots/decision-boundary.json", "events")]  # fmt: skip
    sweep_paths = [f"/sweeps/{sweep_id}/plots/compare.png", f"/sweeps/{sweep_id}/events"]
    for path in experiment_paths + sweep_paths:
        assert keyed_api.get(path, headers=alice).status_code == 200, path
        response = keyed_api.get(path, headers=bob)
        assert response.status_code == 404, path
        assert response.json()["error"] in {"ExperimentNotFound", "SweepNotFound"}
        assert keyed_api.get(path).status_code == 401, path
