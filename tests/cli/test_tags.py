"""`labtrain tag`, and tags and notes in `labtrain show` and `labtrain list`, against the real
service (the `stack` fixture, SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.cli.test_commands import labtrain, refused, write
from tests.conftest import Stack
from tests.integration.test_experiments import parked_spec

pytestmark = pytest.mark.integration


@pytest.mark.timeout(90)
def test_tag_show_and_list_an_experiment(stack: Stack, tmp_path: Path) -> None:
    run = secrets.token_hex(4)
    spec = write(tmp_path / "spec.yaml", parked_spec("cli-tagged") | {"tags": [f"ex-{run}"], "notes": "[b]bold?[/b]"})
    submitted = labtrain(stack.base_url, "submit", str(spec))
    assert submitted.exit_code == 0, submitted.stderr
    experiment_id = submitted.stdout.strip()
    try:
        shown = labtrain(stack.base_url, "show", experiment_id)
        assert f"ex-{run}" in shown.stdout
        assert "[b]bold?[/b]" in shown.stdout  # notes shown as written, never read as markup

        tagged = labtrain(
            stack.base_url, "tag", experiment_id, "--add", f"lr-{run},best-{run}", "--remove", f"ex-{run}"
        )
        assert tagged.exit_code == 0, tagged.stderr
        assert tagged.stdout.strip() == f"lr-{run},best-{run}"
        assert stack.experiment(experiment_id)["tags"] == [f"lr-{run}", f"best-{run}"]
        assert stack.experiment(experiment_id)["notes"] == "[b]bold?[/b]"  # not given: kept

        noted = labtrain(stack.base_url, "tag", experiment_id, "--notes", "lr too high", "--json")
        assert json.loads(noted.stdout)["notes"] == "lr too high"
        assert json.loads(noted.stdout)["tags"] == [f"lr-{run}", f"best-{run}"]
        assert labtrain(stack.base_url, "tag", experiment_id, "--notes", "").exit_code == 0
        assert stack.experiment(experiment_id)["notes"] is None

        listed = labtrain(stack.base_url, "list", "--tag", f"best-{run}")
        assert listed.exit_code == 0, listed.stderr
        assert experiment_id in listed.stdout
        assert f"lr-{run},best-{run}" in listed.stdout  # the tags column
        assert experiment_id not in labtrain(stack.base_url, "list", "--tag", f"ex-{run}").stdout

        refused(labtrain(stack.base_url, "tag", experiment_id, "--add", " x" * 30), 1, "tags")
        refused(labtrain(stack.base_url, "tag", "no-such-id", "--add", "x"), 1, "ExperimentNotFound")
    finally:
        labtrain(stack.base_url, "cancel", experiment_id)


@pytest.mark.timeout(90)
def test_tag_a_sweep_finds_its_members(stack: Stack, tmp_path: Path) -> None:
    run = secrets.token_hex(4)
    body = {"name": f"cli-sweep-{run}", "base": parked_spec("row"), "variants": [{"name": "a"}, {"name": "b"}]}
    submitted = labtrain(stack.base_url, "submit", str(write(tmp_path / "sweep.json", body)))
    assert submitted.exit_code == 0, submitted.stderr
    sweep_id = submitted.stdout.strip()
    try:
        tagged = labtrain(stack.base_url, "tag", sweep_id, "--sweep", "--add", f"study-{run}")
        assert tagged.exit_code == 0, tagged.stderr
        listed = json.loads(labtrain(stack.base_url, "list", "--tag", f"study-{run}", "--json").stdout)
        members = stack.client.get(f"/sweeps/{sweep_id}").json()["experiment_ids"]
        assert sorted(e["id"] for e in listed["items"]) == sorted(members)
    finally:
        labtrain(stack.base_url, "cancel", sweep_id, "--sweep")
