"""With LABTRAIN_API_KEYS set, every route but /healthz needs a key, and owners are isolated."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Stack, api_process
from tests.integration.test_experiments import parked_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def keyed_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A second API process on the same database and Redis, with two owners' keys."""
    log = tmp_path_factory.mktemp("keyed") / "api.log"
    with api_process(stack, {"LABTRAIN_API_KEYS": "alice:key-a,bob:key-b"}, log, {}) as client:
        yield client


@pytest.mark.timeout(60)
def test_keys_are_required_and_owners_see_only_their_experiments(keyed_api: httpx.Client) -> None:
    assert keyed_api.get("/healthz").status_code == 200
    for method, path in [("GET", "/experiments"), ("POST", "/experiments"), ("GET", "/readyz")]:
        response = keyed_api.request(method, path, json=parked_spec("x") if method == "POST" else None)
        assert response.status_code == 401, path
        assert response.json()["error"] == "Unauthorized"
    wrong = keyed_api.get("/experiments", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401

    alice = {"Authorization": "Bearer key-a"}
    bob = {"X-API-Key": "key-b"}
    created = keyed_api.post("/experiments", json=parked_spec("alice's"), headers=alice)
    assert created.status_code == 202
    exp_id = created.json()["id"]
    assert keyed_api.get(f"/experiments/{exp_id}", headers=alice).status_code == 200
    assert exp_id in [e["id"] for e in keyed_api.get("/experiments", headers=alice).json()["items"]]

    assert keyed_api.get(f"/experiments/{exp_id}", headers=bob).status_code == 404
    assert keyed_api.post(f"/experiments/{exp_id}/cancel", headers=bob).status_code == 404
    assert keyed_api.get(f"/experiments/{exp_id}/metrics", headers=bob).status_code == 404
    assert exp_id not in [e["id"] for e in keyed_api.get("/experiments", headers=bob).json()["items"]]

    # Idempotency keys are per owner: bob's "k" does not collide with alice's "k".
    a = keyed_api.post("/experiments", json=parked_spec("a"), headers=alice | {"Idempotency-Key": "k"})
    b = keyed_api.post("/experiments", json=parked_spec("b"), headers=bob | {"Idempotency-Key": "k"})
    assert a.status_code == 202
    assert b.status_code == 202
    assert a.json()["id"] != b.json()["id"]
    for headers, ident in [(alice, exp_id), (alice, a.json()["id"]), (bob, b.json()["id"])]:
        assert keyed_api.post(f"/experiments/{ident}/cancel", headers=headers).status_code == 202
