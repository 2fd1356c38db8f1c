"""Tags and notes, through real HTTP on SQLite and PostgreSQL: set in the spec at submission,
changed with PATCH, shown on every read, and `?tag=` filters lists (an experiment's own tags
or its sweep's). The spec stored for the run never holds them."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.conftest import Stack
from tests.integration.test_experiments import parked_spec
from tests.integration.test_sweeps import base_spec, post_sweep

pytestmark = pytest.mark.integration


def _ids(stack: Stack, query: str) -> list[str]:
    response = stack.client.get(f"/experiments?{query}")
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def _fields(response: Any) -> list[list[Any]]:
    return [e["loc"] for e in response.json()["errors"]]


@pytest.mark.timeout(90)
def test_tags_and_notes_are_set_at_submission_changed_by_patch_and_filter_the_list(stack: Stack) -> None:
    run = secrets.token_hex(4)  # tags of this test only: the stack is shared
    tagged = stack.submit(parked_spec("tagged") | {"tags": [f"ex1-{run}", f"lr-{run}"], "notes": "first try\n\tok"})
    other = stack.submit(parked_spec("other") | {"tags": [f"ex1-{run}"]})
    plain = stack.submit(parked_spec("plain"))
    try:
        assert tagged["tags"] == [f"ex1-{run}", f"lr-{run}"]
        assert tagged["notes"] == "first try\n\tok"
        assert "tags" not in tagged["spec"]
        assert "notes" not in tagged["spec"]
        assert plain["tags"] == []
        assert plain["notes"] is None

        assert _ids(stack, f"tag=ex1-{run}") == [other["id"], tagged["id"]]  # newest first
        assert _ids(stack, f"tag=ex1-{run}&tag=lr-{run}") == [tagged["id"]]  # every tag given
        assert _ids(stack, f"tag=EX1-{run}") == []  # exact, case included, on both databases
        assert _ids(stack, f"tag=ex1-{run[:4]}") == []  # a whole tag, never a part of one
        assert _ids(stack, f"tag=ex1-{run}&status=cancelled") == []

        patched = stack.client.patch(f"/experiments/{tagged['id']}", json={"tags": [f"lr-{run}", f"kept-{run}"]})
        assert patched.status_code == 200, patched.text
        assert patched.json()["tags"] == [f"lr-{run}", f"kept-{run}"]
        assert patched.json()["notes"] == "first try\n\tok"  # left out: unchanged
        assert stack.experiment(tagged["id"])["tags"] == [f"lr-{run}", f"kept-{run}"]
        assert _ids(stack, f"tag=ex1-{run}") == [other["id"]]
        assert _ids(stack, f"tag=kept-{run}") == [tagged["id"]]

        cleared = stack.client.patch(f"/experiments/{tagged['id']}", json={"notes": None})
        assert cleared.json()["notes"] is None
        assert cleared.json()["tags"] == [f"lr-{run}", f"kept-{run}"]
        emptied = stack.client.patch(f"/experiments/{tagged['id']}", json={"tags": []})
        assert emptied.json()["tags"] == []
        assert _ids(stack, f"tag=kept-{run}") == []
    finally:
        for e in (tagged, other, plain):
            stack.client.post(f"/experiments/{e['id']}/cancel")


@pytest.mark.timeout(60)
def test_a_tag_is_matched_as_written_never_as_a_pattern(stack: Stack) -> None:
    run = secrets.token_hex(4)
    underscored = stack.submit(parked_spec("underscore") | {"tags": [f"a_b-{run}"]})
    lookalike = stack.submit(parked_spec("lookalike") | {"tags": [f"axb-{run}", f"50%-{run}"]})
    try:
        assert _ids(stack, f"tag=a_b-{run}") == [underscored["id"]]  # `_` is not LIKE's any-character
        assert _ids(stack, f"tag=50%25-{run}") == [lookalike["id"]]
        assert _ids(stack, f"tag=%25-{run}") == []
    finally:
        for e in (underscored, lookalike):
            stack.client.post(f"/experiments/{e['id']}/cancel")


@pytest.mark.timeout(60)
def test_bad_tags_notes_and_patch_bodies_are_422s_naming_the_field(stack: Stack) -> None:
    bad_specs: dict[tuple[Any, ...], dict[str, Any]] = {
        ("body", "tags", 0): {"tags": ["a,b"]},
        ("body", "tags", 1): {"tags": ["ok", " padded"]},
        ("body", "tags", 2): {"tags": ["ok", "fine", "x" * 51]},
        ("body", "tags"): {"tags": [f"t{i}" for i in range(21)]},
        ("body", "notes"): {"notes": "x" * 10_001},
    }
    for loc, bad in bad_specs.items():
        response = stack.client.post("/experiments", json=parked_spec("bad") | bad)
        assert response.status_code == 422, (bad, response.text)
        assert list(loc) in _fields(response), (bad, response.text)
    nul = stack.client.post("/experiments", json=parked_spec("bad") | {"notes": "a\x00b"})
    assert nul.status_code == 422
    assert ["body", "notes"] in _fields(nul)

    experiment = stack.submit(parked_spec("patched"))
    try:
        path = f"/experiments/{experiment['id']}"
        unknown = stack.client.patch(path, json={"tags": ["a"], "name": "renamed"})
        assert unknown.status_code == 422
        assert ["body", "name"] in _fields(unknown)
        assert stack.client.patch(path, json={"tags": None}).status_code == 422  # `[]` removes them all
        assert ["body", "tags", 0] in _fields(stack.client.patch(path, json={"tags": ["a,b"]}))
        assert stack.client.patch(path, json={}).json()["tags"] == []  # nothing given: nothing changed
        bad_filter = stack.client.get("/experiments?tag=a,b")
        assert bad_filter.status_code == 422
        assert ["query", "tag", 0] in _fields(bad_filter)
        missing = stack.client.patch("/experiments/nope", json={"tags": ["a"]})
        assert missing.status_code == 404
        assert missing.json()["error"] == "ExperimentNotFound"
        assert stack.client.patch("/sweeps/nope", json={"tags": ["a"]}).json()["error"] == "SweepNotFound"
    finally:
        stack.client.post(f"/experiments/{experiment['id']}/cancel")


@pytest.mark.timeout(60)
def test_the_idempotency_key_covers_tags_and_survives_a_patch(stack: Stack) -> None:
    run = secrets.token_hex(4)
    spec = parked_spec("keyed") | {"tags": [f"k-{run}"]}
    first = stack.client.post("/experiments", json=spec, headers={"Idempotency-Key": f"key-{run}"})
    assert first.status_code == 202, first.text
    try:
        stack.client.patch(f"/experiments/{first.json()['id']}", json={"tags": [f"changed-{run}"]})
        again = stack.client.post("/experiments", json=spec, headers={"Idempotency-Key": f"key-{run}"})
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["tags"] == [f"changed-{run}"]
        other = spec | {"tags": [f"other-{run}"]}
        assert (
            stack.client.post("/experiments", json=other, headers={"Idempotency-Key": f"key-{run}"}).status_code == 409
        )
    finally:
        stack.client.post(f"/experiments/{first.json()['id']}/cancel")


@pytest.mark.timeout(60)
def test_a_sweeps_tags_reach_its_members_and_find_them_after_a_patch(stack: Stack) -> None:
    run = secrets.token_hex(4)
    base = base_spec(device="cuda") | {"tags": [f"sweep-{run}"], "notes": "depth study"}  # parked: no gpu worker
    body = {"name": f"tagged-{run}", "base": base, "grid": {"model.hidden_layers": [1, 2]}}
    sweep = post_sweep(stack, body)
    other = post_sweep(
        stack, {"name": f"untagged-{run}", "base": base_spec(device="cuda"), "variants": [{"name": "a"}]}
    )
    try:
        assert sweep["tags"] == [f"sweep-{run}"]
        assert sweep["notes"] == "depth study"
        members = sweep["experiment_ids"]
        for member in members:
            read = stack.experiment(member)
            assert read["tags"] == [f"sweep-{run}"]
            assert read["notes"] == "depth study"
            assert "tags" not in read["spec"]
        assert sorted(_ids(stack, f"tag=sweep-{run}")) == sorted(members)

        patched = stack.client.patch(f"/sweeps/{sweep['id']}", json={"tags": [f"sweep-{run}", f"best-{run}"]})
        assert patched.status_code == 200, patched.text
        assert patched.json()["tags"] == [f"sweep-{run}", f"best-{run}"]
        assert patched.json()["notes"] == "depth study"
        assert stack.experiment(members[0])["tags"] == [f"sweep-{run}"]  # a member keeps its own
        assert sorted(_ids(stack, f"tag=best-{run}")) == sorted(members)  # found by its sweep's tag

        listed = stack.client.get(f"/sweeps?tag=best-{run}").json()["items"]
        assert [s["id"] for s in listed] == [sweep["id"]]
        assert other["id"] in [s["id"] for s in stack.client.get("/sweeps").json()["items"]]
        assert stack.client.get(f"/sweeps?tag=best-{run}&tag=nothing-{run}").json()["items"] == []
    finally:
        for s in (sweep, other):
            stack.client.post(f"/sweeps/{s['id']}/cancel")


@pytest.mark.timeout(60)
def test_a_row_may_tag_itself_and_a_bad_base_tag_is_refused(stack: Stack) -> None:
    run = secrets.token_hex(4)
    base = base_spec(device="cuda") | {"tags": [f"base-{run}"]}
    variants = [{"name": "plain"}, {"name": "special", "tags": [f"special-{run}"]}]
    sweep = post_sweep(stack, {"name": f"rows-{run}", "base": base, "variants": variants})
    try:
        tags = [stack.experiment(i)["tags"] for i in sweep["experiment_ids"]]
        assert tags == [[f"base-{run}"], [f"special-{run}"]]
        assert sweep["tags"] == [f"base-{run}"]
    finally:
        stack.client.post(f"/sweeps/{sweep['id']}/cancel")
    refused = stack.client.post(
        "/sweeps",
        json={"base": base_spec() | {"tags": ["a,b"]}, "variants": [{"name": "x", "tags": ["fine"]}]},
    )
    assert refused.status_code == 422, refused.text
    assert _fields(refused) == [["body", "base", "tags", 0]]
