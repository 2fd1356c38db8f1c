"""The client's tags and notes against the real service: set in the submitted spec, changed with
`Experiment.update` and `Sweep.update`, and `experiments(tag=)` / `sweeps(tag=)` filtered by the
service (a page of untagged experiments is never filtered here)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

import labtrain
from labtrain import Client
from tests.conftest import Stack
from tests.integration.test_experiments import parked_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.base_url) as c:
        yield c


@pytest.mark.timeout(90)
def test_update_tags_and_notes_and_filter_by_tag(client: Client) -> None:
    run = secrets.token_hex(4)
    first = client.submit(parked_spec("client-tagged") | {"tags": [f"a-{run}"], "notes": "from a notebook"})
    second = client.submit(parked_spec("client-other"))
    try:
        assert first.tags == [f"a-{run}"]
        assert first.notes == "from a notebook"
        assert [e.id for e in client.experiments(tag=f"a-{run}")] == [first.id]

        assert second.update(tags=[f"a-{run}", f"b-{run}"]) is second
        assert second.tags == [f"a-{run}", f"b-{run}"]
        assert second.notes is None
        second.update(notes="second thoughts")
        assert second.refresh().tags == [f"a-{run}", f"b-{run}"]  # not given: kept
        assert second.notes == "second thoughts"
        assert [e.id for e in client.experiments(tag=f"a-{run}", page_size=1)] == [second.id, first.id]
        assert [e.id for e in client.experiments(tag=[f"a-{run}", f"b-{run}"])] == [second.id]

        first.update(notes=None)
        assert client.experiment(first.id).notes is None
        with pytest.raises(labtrain.ValidationError) as refused:
            first.update(tags=["no,commas"])
        assert refused.value.fields == ["tags.0"]
    finally:
        first.cancel()
        second.cancel()


@pytest.mark.timeout(90)
def test_a_sweeps_update_and_its_members_found_by_its_tag(client: Client) -> None:
    run = secrets.token_hex(4)
    body = {"name": f"client-sweep-{run}", "base": parked_spec("row"), "variants": [{"name": "x"}, {"name": "y"}]}
    sweep = client.submit_sweep(body)
    try:
        assert sweep.tags == []
        sweep.update(tags=[f"study-{run}"], notes="depth against width")
        assert client.sweep(sweep.id).tags == [f"study-{run}"]
        assert client.sweep(sweep.id).notes == "depth against width"
        assert [s.id for s in client.sweeps(tag=f"study-{run}")] == [sweep.id]
        found = sorted(e.id for e in client.experiments(tag=f"study-{run}"))
        assert found == sorted(sweep.data["experiment_ids"])
    finally:
        sweep.cancel()
