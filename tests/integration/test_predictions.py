"""Predictions through the real API from models trained by real workers, on SQLite and PostgreSQL:
equal to the trained network's own output (recomputed from the downloaded weights, without
ml.predict), in each task's shapes and units, and every refusal."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import Stack
from tests.integration.serving import (
    ALICE_KEY,
    MAX_ROWS,
    SPECS,
    assert_same,
    expected_predictions,
    predict,
)
from tests.integration.test_experiments import parked_spec

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", list(SPECS))
def test_predictions_are_the_trained_networks_own_output(
    stack: Stack, trained: dict[str, dict[str, Any]], kind: str
) -> None:
    case = trained[kind]
    response = predict(stack.client, case["experiment"]["id"], case["rows"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["experiment_id"] == case["experiment"]["id"]
    assert_same(body["predictions"], expected_predictions(case["model"], case["rows"]))


@pytest.mark.timeout(120)
def test_answers_are_in_the_shapes_and_units_of_each_task(stack: Stack, trained: dict[str, dict[str, Any]]) -> None:
    def answers(kind: str, rows: list[Any] | None = None) -> list[dict[str, Any]]:
        response = predict(stack.client, trained[kind]["experiment"]["id"], rows or trained[kind]["rows"])
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    for p in answers("binary"):
        assert set(p) == {"label", "probabilities"}
        assert p["label"] in (0, 1)
        assert sum(p["probabilities"]) == pytest.approx(1.0)
    rows = trained["binary"]["rows"][:3]
    as_objects = [{"x2": r[1], "x1": r[0]} for r in rows]  # keyed by feature name, any order
    assert answers("binary", as_objects) == answers("binary", rows)

    for p in answers("multiclass"):
        assert len(p["probabilities"]) == 10
        assert p["label"] == int(np.argmax(p["probabilities"]))
    images = trained["multiclass"]["rows"][:2]  # (1, 16, 16) each
    assert answers("multiclass", [image[0] for image in images]) == answers("multiclass", images)  # [H][W]

    for p in answers("two_targets"):
        assert set(p) == {"digit", "color"}
        assert p["color"]["label"] in ("red", "green", "blue")
        assert len(p["digit"]["probabilities"]) == 10

    values = [p["value"] for p in answers("regression")]
    assert 50_000 < float(np.median(values)) < 500_000  # USD, not standardized units

    gaussian = answers("gaussian")
    assert all(set(p) == {"mu", "sigma"} for p in gaussian)
    assert all(p["sigma"] > 0 for p in gaussian)
    assert 50_000 < float(np.median([p["mu"] for p in gaussian])) < 500_000  # USD
    assert 1_000 < float(np.median([p["sigma"] for p in gaussian])) < 300_000  # USD, scaled by the target's std


@pytest.mark.timeout(120)
def test_refusals_say_what_is_wrong(stack: Stack, trained: dict[str, dict[str, Any]]) -> None:
    client = stack.client
    for method, path in [
        ("POST", "/experiments/nope/predictions"),
        ("POST", "/experiments/nope/evaluations"),
        ("GET", "/experiments/nope/evaluations"),
        ("GET", "/experiments/nope/model"),
    ]:
        response = client.request(method, path, json={"inputs": [[0, 0]]} if "predictions" in path else None)
        assert response.status_code == 404, path
        assert response.json() == {"error": "ExperimentNotFound", "detail": "no experiment with id 'nope'"}

    parked = stack.submit(parked_spec("serve-parked"))  # stays queued: no test worker serves the gpu queue
    for status, words in [("queued", "is queued"), ("cancelled", "was cancelled")]:
        if status == "cancelled":
            assert client.post(f"/experiments/{parked['id']}/cancel").status_code == 202
        for method, path in [("POST", "predictions"), ("POST", "evaluations"), ("GET", "model")]:
            body = {"inputs": [[0, 0]]} if path == "predictions" else None
            response = client.request(method, f"/experiments/{parked['id']}/{path}", json=body)
            assert response.status_code == 409, (path, response.text)
            assert response.json()["error"] == "ExperimentNotFinished"
            assert response.json()["status"] == status
            assert f"experiment {parked['id']} {words}; only a succeeded experiment" in response.json()["detail"]

    binary = trained["binary"]["experiment"]["id"]
    url = f"/experiments/{binary}/predictions"
    for body, loc, kind in [
        ([[0, 0]], ["body"], "model_attributes_type"),  # not an object
        ({}, ["body", "inputs"], "missing"),
        ({"inputs": "0,0"}, ["body", "inputs"], "list_type"),
        ({"inputs": [[0, 0]], "extra": 1}, ["body", "extra"], "extra_forbidden"),
    ]:
        response = client.post(url, json=body)
        assert response.status_code == 422, body
        assert response.json()["error"] == "ValidationError"
        assert [(e["loc"], e["type"]) for e in response.json()["errors"]] == [(loc, kind)]
    garbage = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 422

    good = [0.5, 0.5]
    for inputs, loc, kind, message in [
        ([], ["body", "inputs"], "too_short", "inputs must be a non-empty list of rows"),
        ([good, [1.0]], ["body", "inputs", 1], "shape", "expected 2 numbers, got 1"),
        ([good, good, [1.0, "a"]], ["body", "inputs", 2], "number_type", "'a' is not a number"),
        ([[1.0, None]], ["body", "inputs", 0], "number_type", "None is not a number"),
        ([[True, 1.0]], ["body", "inputs", 0], "number_type", "True is not a number"),
        ([{"x1": 1.0}], ["body", "inputs", 0], "missing", "missing feature 'x2'"),
        ([{"x1": 1, "x2": 2, "x3": 3}], ["body", "inputs", 0], "extra_forbidden", "unknown feature 'x3'"),
        ([[[1.0, 2.0]]], ["body", "inputs", 0], "shape", "expected 2 numbers, got 1x2"),
        ([3.0], ["body", "inputs", 0], "shape", "expected 2 numbers, got a single number"),
    ]:
        response = predict(client, binary, inputs)
        assert response.status_code == 422, inputs
        body = response.json()
        assert body["error"] == "ValidationError"
        assert len(body["errors"]) == 1
        assert body["errors"][0]["loc"] == loc
        assert body["errors"][0]["type"] == kind
        assert message in body["errors"][0]["msg"]
        assert message in body["detail"]
    # Non-finite numbers: Python's JSON reader accepts NaN and 1e999 (infinity).
    for raw in (b'{"inputs": [[1.0, NaN]]}', b'{"inputs": [[1e999, 0]]}'):
        response = client.post(url, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, raw
        assert response.json()["errors"][0]["loc"][:3] == ["body", "inputs", 0]  # [3]: the column (api/json_guard.py)
        assert "not a finite number" in response.json()["errors"][0]["msg"]

    digits = trained["multiclass"]["experiment"]["id"]
    response = predict(client, digits, [[[0.0] * 16] * 15])
    assert response.status_code == 422
    assert response.json()["errors"][0]["msg"] == "expected 1x16x16 (or 16x16), got 1x15x16"
    response = predict(client, digits, [{"pixel": 1}])
    assert "an image is a nested list" in response.json()["errors"][0]["msg"]
    house = trained["regression"]["experiment"]["id"]
    response = predict(client, house, [{"Lot_Area": 8000}])
    assert response.status_code == 422
    assert response.json()["errors"][0]["msg"] == "missing feature 'Year_Built'"
    # Finite, but beyond float32 once standardized (Full_Bath's std is about 0.5): the network's
    # output is not a number, and the answer says which row rather than failing to encode JSON.
    response = predict(client, house, [trained["regression"]["rows"][0], [3e38] * 10])
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert (error["loc"], error["type"]) == (["body", "inputs", 1], "non_finite_output")
    assert "output for this row is not a finite number" in error["msg"]


@pytest.mark.timeout(60)
def test_more_rows_than_the_limit_are_refused(small_api: httpx.Client, trained: dict[str, dict[str, Any]]) -> None:
    binary = trained["binary"]["experiment"]["id"]
    assert predict(small_api, binary, [[0.1, 0.2]] * MAX_ROWS).status_code == 200
    response = predict(small_api, binary, [[0.1, 0.2]] * (MAX_ROWS + 1))
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["loc"] == ["body", "inputs"]
    assert error["type"] == "too_long"
    assert f"{MAX_ROWS + 1} rows is more than the limit of {MAX_ROWS}" in error["msg"]
    assert "LABTRAIN_MAX_PREDICTION_ROWS" in error["msg"]


@pytest.mark.timeout(60)
def test_another_owners_model_is_not_found(small_api: httpx.Client, trained: dict[str, dict[str, Any]]) -> None:
    exp_id = trained["binary"]["experiment"]["id"]
    alice = {"X-API-Key": ALICE_KEY}
    for method, path, body in [
        ("POST", "predictions", {"inputs": [[0.1, 0.2]]}),
        ("POST", "evaluations", {"split": "test"}),
        ("GET", "evaluations", None),
        ("GET", "model", None),
    ]:
        url = f"/experiments/{exp_id}/{path}"
        response = small_api.request(method, url, json=body, headers=alice)
        assert response.status_code == 404, path
        assert response.json() == {"error": "ExperimentNotFound", "detail": f"no experiment with id '{exp_id}'"}
        anonymous = httpx.request(method, f"{small_api.base_url}{url}", json=body)
        assert anonymous.status_code == 401, path
    assert predict(small_api, exp_id, [[0.1, 0.2]]).status_code == 200  # its owner's key


# -- evaluations -------------------------------------------------------------------------------
