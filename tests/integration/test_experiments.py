"""Submitting, following, listing and cancelling experiments through the real API, trained by
real Celery workers on Redis, stored in SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
from sqlalchemy import update

from core.db import get_engine, session_factory
from core.tables import Experiment, Sweep
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration


def tiny_spec(name: str, epochs: int = 40, **overrides: Any) -> dict[str, Any]:
    """A spirals MLP that trains in well under a second per few dozen epochs."""
    spec: dict[str, Any] = {
        "name": name,
        "dataset": {"name": "spirals", "params": {"n_samples": 1000, "noise": 0.1}, "seed": 0},
        "model": {"type": "mlp", "hidden_layers": 2, "neurons": 8, "activation": "relu"},
        "loss": "bce",
        "optimizer": {"name": "adam", "lr": 0.01},
        "batch_size": 128,
        "epochs": epochs,
        "seed": 0,
    }
    spec.update(overrides)
    return spec


def parked_spec(name: str) -> dict[str, Any]:
    """A spec for the gpu queue, which no test worker serves: it stays queued."""
    return tiny_spec(name, device="cuda")


@pytest.mark.timeout(90)
def test_experiment_goes_queued_running_succeeded_with_every_epoch(stack: Stack) -> None:
    created = stack.submit(tiny_spec("happy", epochs=60))
    assert created["status"] == "queued"
    assert created["task"] == "binary"
    assert created["param_count"] == 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1  # 2→8→8→1
    assert created["spec"]["optimizer"]["lr"] == 0.01
    assert created["spec"]["dataset"]["split"]["val"] == 0.2

    seen: list[str] = []

    def finished() -> dict[str, Any] | None:
        exp = stack.experiment(created["id"])
        if not seen or seen[-1] != exp["status"]:
            seen.append(exp["status"])
        return exp if exp["status"] in {"succeeded", "failed", "cancelled", "diverged"} else None

    exp = wait_for(finished, 60, interval=0.02, what="the experiment to finish")
    assert exp["status"] == "succeeded", exp["error"]
    assert "running" in seen
    assert seen.index("running") < seen.index("succeeded")
    assert exp["epochs_done"] == 60
    assert exp["attempt"] == 1
    assert exp["error"] is None
    assert exp["device"] == "cpu"
    assert exp["created_at"] <= exp["started_at"] <= exp["finished_at"]
    assert exp["metrics"]["latest"]["epoch"] == 60
    assert 0.5 < exp["metrics"]["best"]["val_accuracy"] <= 1.0
    assert exp["train_seconds"] > 0

    epochs = stack.epochs(created["id"])
    assert [e["epoch"] for e in epochs] == list(range(1, 61))
    for e in epochs:
        assert set(e) == {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds"}
        assert e["train_loss"] > 0
        assert e["val_loss"] > 0
        assert e["seconds"] > 0
    assert epochs[-1]["val_accuracy"] == exp["metrics"]["latest"]["val_accuracy"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]  # it learned something

    response = stack.client.get(f"/experiments/{created['id']}/metrics", params={"format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["epoch", "train_loss", "val_loss", "val_accuracy", "seconds"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 61))
    assert float(rows[-1][3]) == pytest.approx(epochs[-1]["val_accuracy"])


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"modell": {}}, ["body", "modell"]),  # unknown field
        ({"optimizer": {"name": "adam", "lr": -1}}, ["body", "optimizer", "lr"]),
        ({"epochs": 0}, ["body", "epochs"]),
        ({"loss": "gaussian_nll"}, ["body", "loss"]),  # a loss that does not fit a binary task
        ({"dataset": {"name": "no_such_dataset"}}, ["body", "dataset", "name"]),
        ({"model": {"type": "mlp", "hidden_layers": 6, "neurons": 2000}}, ["body", "model"]),  # over max_params
    ],
)
@pytest.mark.timeout(30)
def test_invalid_spec_is_422_naming_the_field_and_creates_nothing(
    stack: Stack, change: dict[str, Any], loc: list[str]
) -> None:
    before = stack.client.get("/experiments", params={"limit": 200}).json()["items"]
    response = stack.client.post("/experiments", json=tiny_spec("invalid") | change)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "ValidationError"
    assert any(e["loc"][: len(loc)] == loc for e in body["errors"]), body["errors"]
    assert ".".join(loc[1:]) in body["detail"]
    after = stack.client.get("/experiments", params={"limit": 200}).json()["items"]
    assert [e["id"] for e in after] == [e["id"] for e in before]


@pytest.mark.timeout(30)
def test_body_that_is_not_a_spec_is_422(stack: Stack) -> None:
    response = stack.client.post("/experiments", content=b"not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"] == "ValidationError"
    response = stack.client.post("/experiments", json={"name": "no dataset"})
    assert response.status_code == 422
    assert ["body", "dataset"] in [e["loc"] for e in response.json()["errors"]]


@pytest.mark.timeout(60)
def test_same_idempotency_key_gives_one_experiment(stack: Stack) -> None:
    spec = tiny_spec("idempotent", epochs=5)
    first = stack.client.post("/experiments", json=spec, headers={"Idempotency-Key": "key-1"})
    second = stack.client.post("/experiments", json=spec, headers={"Idempotency-Key": "key-1"})
    assert first.status_code == 202
    assert second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    items = stack.client.get("/experiments", params={"limit": 200}).json()["items"]
    assert [e["id"] for e in items if e["name"] == "idempotent"] == [first.json()["id"]]

    reused = stack.client.post("/experiments", json=tiny_spec("other", epochs=5), headers={"Idempotency-Key": "key-1"})
    assert reused.status_code == 409
    assert reused.json()["error"] == "IdempotencyKeyReused"
    assert first.json()["id"] in reused.json()["detail"]

    exp = stack.wait_terminal(first.json()["id"])
    assert exp["status"] == "succeeded"
    assert exp["attempt"] == 1
    assert [e["epoch"] for e in stack.epochs(exp["id"])] == [1, 2, 3, 4, 5]
    # After the run, the key still names the same experiment, and nothing is trained again.
    third = stack.client.post("/experiments", json=spec, headers={"Idempotency-Key": "key-1"})
    assert third.status_code == 200
    assert third.json()["id"] == exp["id"]
    assert third.json()["attempt"] == 1


@pytest.mark.timeout(30)
def test_unknown_id_gets_the_404_envelope(stack: Stack) -> None:
    for method, path in [
        ("GET", "/experiments/doesnotexist"),
        ("GET", "/experiments/doesnotexist/metrics"),
        ("POST", "/experiments/doesnotexist/cancel"),
    ]:
        response = stack.client.request(method, path)
        assert response.status_code == 404, path
        assert response.json() == {"error": "ExperimentNotFound", "detail": "no experiment with id 'doesnotexist'"}
    response = stack.client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"


@pytest.mark.timeout(90)
def test_cancel_stops_a_long_run_at_an_epoch_boundary(stack: Stack) -> None:
    exp = stack.submit(tiny_spec("long", epochs=100_000))
    wait_for(lambda: stack.experiment(exp["id"])["epochs_done"] >= 5, 60, what="a few epochs")
    response = stack.client.post(f"/experiments/{exp['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True

    done = stack.wait_terminal(exp["id"], timeout=30)
    assert done["status"] == "cancelled"
    assert done["error"] is None
    epochs = stack.epochs(exp["id"])
    assert [e["epoch"] for e in epochs] == list(range(1, done["epochs_done"] + 1))
    assert done["epochs_done"] < 100_000
    time.sleep(1.0)
    assert len(stack.epochs(exp["id"])) == len(epochs)  # the metrics stopped
    again = stack.client.post(f"/experiments/{exp['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"] == "ExperimentFinished"


@pytest.mark.timeout(30)
def test_cancel_a_queued_experiment_at_once(stack: Stack) -> None:
    exp = stack.submit(parked_spec("parked"))
    assert exp["queue"] == "gpu"
    response = stack.client.post(f"/experiments/{exp['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] is not None
    assert stack.experiment(exp["id"])["status"] == "cancelled"


def _assign_sweep(stack: Stack, ids: list[str]) -> str:
    """Put experiments in a new sweep (the sweeps API is issue 4; the rows are what it will write)."""
    factory = session_factory(get_engine(stack.database_url))
    with factory.begin() as session:
        sweep = Sweep(owner="default", name="listing", spec={})
        session.add(sweep)
        session.flush()
        session.execute(update(Experiment).where(Experiment.id.in_(ids)).values(sweep_id=sweep.id))
        return sweep.id


@pytest.mark.timeout(60)
def test_list_filters_and_cursor_pagination(stack: Stack) -> None:
    ids = [stack.submit(parked_spec(f"page-{i}"))["id"] for i in range(5)]
    sweep_id = _assign_sweep(stack, ids)
    stack.client.post(f"/experiments/{ids[1]}/cancel")

    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"sweep_id": sweep_id, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = stack.client.get("/experiments", params=params).json()
        pages.append([e["id"] for e in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == list(reversed(ids))  # newest first, each once

    queued = stack.client.get("/experiments", params={"sweep_id": sweep_id, "status": "queued"}).json()
    assert [e["id"] for e in queued["items"]] == [i for i in reversed(ids) if i != ids[1]]
    cancelled = stack.client.get("/experiments", params={"sweep_id": sweep_id, "status": "cancelled"}).json()
    assert [e["id"] for e in cancelled["items"]] == [ids[1]]
    assert cancelled["next_cursor"] is None
    everyone = stack.client.get("/experiments", params={"status": "cancelled", "limit": 200}).json()["items"]
    assert all(e["status"] == "cancelled" for e in everyone)

    for params, status, error in [
        ({"limit": 0}, 422, "ValidationError"),
        ({"limit": 201}, 422, "ValidationError"),
        ({"status": "done"}, 422, "ValidationError"),
        ({"cursor": "garbage!"}, 400, "InvalidCursor"),
    ]:
        response = stack.client.get("/experiments", params=params)
        assert response.status_code == status, params
        assert response.json()["error"] == error
    for i in ids:  # leave nothing queued behind
        stack.client.post(f"/experiments/{i}/cancel")


@pytest.mark.timeout(30)
def test_health_and_readiness(stack: Stack) -> None:
    assert stack.client.get("/healthz").json() == {"status": "ok"}
    ready = stack.client.get("/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"] == "ok"
    assert all(name in checks["workers"] for name in stack.workers)


@pytest.mark.timeout(30)
def test_openapi_documents_the_model22_example(stack: Stack) -> None:
    schema = stack.client.get("/openapi.json").json()
    body = schema["paths"]["/experiments"]["post"]["requestBody"]["content"]["application/json"]
    assert body["examples"]["model22"]["value"]["name"] == "model22"
    assert stack.client.get("/docs").status_code == 200
