"""Owner isolation across every route: with LABTRAIN_API_KEYS set, another owner's experiment,
sweep or dataset does not exist for you (404, never 403: its existence is not revealed), on
every operation the API publishes, and lists never show it.

The table of calls below is checked against `/openapi.json`: a route added with a path
parameter and no entry here fails the test until someone says how it is isolated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import TERMINAL, Stack, api_process, wait_for
from tests.integration.test_datasets import csv_bytes
from tests.integration.test_experiments import tiny_spec
from tests.integration.test_sweeps import base_spec

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer key-a"}
BOB = {"Authorization": "Bearer key-b"}

# (method, path template) → the request's extra arguments. Destructive calls come last.
CALLS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/experiments/{experiment_id}"): {},
    ("get", "/experiments/{experiment_id}/metrics"): {},
    ("post", "/experiments/{experiment_id}/predictions"): {"json": {"inputs": [[0.1, -0.2]]}},
    ("get", "/experiments/{experiment_id}/evaluations"): {},
    ("post", "/experiments/{experiment_id}/evaluations"): {"json": {"split": "val"}},
    ("get", "/experiments/{experiment_id}/model"): {},
    ("get", "/experiments/{experiment_id}/plots/{kind}.png"): {"kind": "learning-curves"},
    ("get", "/experiments/{experiment_id}/plots/{kind}.json"): {"kind": "decision-boundary"},
    ("get", "/experiments/{experiment_id}/events"): {},
    ("get", "/sweeps/{sweep_id}"): {},
    ("get", "/sweeps/{sweep_id}/table"): {},
    ("get", "/sweeps/{sweep_id}/plots/compare.png"): {},
    ("get", "/sweeps/{sweep_id}/events"): {},
    ("get", "/datasets/{name}"): {},
    ("get", "/experiments/{experiment_id}/deliveries"): {},
    ("get", "/sweeps/{sweep_id}/deliveries"): {},
    ("patch", "/experiments/{experiment_id}"): {"json": {"tags": ["bob-was-here"]}},
    ("patch", "/sweeps/{sweep_id}"): {"json": {"notes": "bob was here"}},
    ("post", "/experiments/{experiment_id}/cancel"): {},
    ("post", "/sweeps/{sweep_id}/cancel"): {},
    ("delete", "/datasets/{name}"): {},
}


@pytest.fixture
def keyed(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A second API process on the stack's database and Redis, with alice's and bob's keys."""
    log = tmp_path_factory.mktemp("isolation") / "api.log"
    with api_process(stack, {"LABTRAIN_API_KEYS": "alice:key-a,bob:key-b"}, log, {}) as client:
        yield client


def _alices_resources(client: httpx.Client) -> dict[str, str]:
    experiment = client.post("/experiments", json=tiny_spec("alice's model", epochs=5), headers=ALICE)
    assert experiment.status_code == 202, experiment.text
    sweep = client.post("/sweeps", json={"base": base_spec(epochs=3), "variants": [{"name": "a"}]}, headers=ALICE)
    assert sweep.status_code == 202, sweep.text
    name = f"alice-data-{experiment.json()['id']}"
    files = {"file": ("a.csv", csv_bytes())}
    dataset = client.post("/datasets", files=files, data={"target": "label", "name": name}, headers=ALICE)
    assert dataset.status_code == 201, dataset.text
    ids = {"experiment_id": experiment.json()["id"], "sweep_id": sweep.json()["id"], "name": dataset.json()["id"]}

    def ended() -> bool:
        exp = client.get(f"/experiments/{ids['experiment_id']}", headers=ALICE).json()
        swept = client.get(f"/sweeps/{ids['sweep_id']}", headers=ALICE).json()
        return exp["status"] in TERMINAL and swept["status"] == "finished"

    wait_for(ended, 90, interval=0.1, what="alice's experiment and sweep")
    return ids


def _call(client: httpx.Client, method: str, template: str, ids: dict[str, str], headers: dict[str, str]) -> Any:
    extra = dict(CALLS[(method, template)])
    path = template.format(kind=extra.pop("kind", ""), **ids)
    return client.request(method.upper(), path, headers=headers, **extra)


@pytest.mark.timeout(150)
def test_no_route_shows_or_touches_another_owners_resources(keyed: httpx.Client) -> None:
    published = {
        (method, path)
        for path, operations in keyed.get("/openapi.json", headers=ALICE).json()["paths"].items()  # a key, as anywhere
        if "{" in path
        for method in operations
    }
    assert published == set(CALLS), "every route with a path parameter needs an isolation check here"
    ids = _alices_resources(keyed)

    for method, template in CALLS:  # bob first: his cancel and delete must change nothing
        response = _call(keyed, method, template, ids, BOB)
        assert response.status_code == 404, (method, template, response.status_code, response.text)
        assert response.json()["error"] in {"ExperimentNotFound", "SweepNotFound", "DatasetNotFound"}
        assert _call(keyed, method, template, ids, {}).status_code == 401, (method, template)

    lists = {
        "/experiments": ids["experiment_id"],
        f"/experiments?sweep_id={ids['sweep_id']}": None,
        "/sweeps": ids["sweep_id"],
        "/datasets": ids["name"],
    }
    for path, alices in lists.items():
        items = keyed.get(path, headers=BOB).json()["items"]
        assert all(item.get("owner", "bob") == "bob" for item in items), path
        if alices is not None:
            assert alices not in [item["id"] for item in items], path
            assert alices in [item["id"] for item in keyed.get(path, headers=ALICE).json()["items"]], path
        else:
            assert items == [], path

    for method, template in CALLS:  # alice still has all of it, untouched by bob
        response = _call(keyed, method, template, ids, ALICE)
        finished = template.endswith("/cancel")  # hers, and already ended: 409 says so
        assert response.status_code == 409 if finished else response.status_code < 300, (
            method,
            template,
            response.status_code,
            response.text,
        )
    assert keyed.get(f"/datasets/{ids['name']}", headers=ALICE).status_code == 404  # her own delete worked
