"""Memory is bounded before it is spent, through the real API on SQLite and PostgreSQL: a spec
whose training would need more than LABTRAIN_MAX_RUN_MEMORY_BYTES is a 422 naming the limit
and the field (alone or as a sweep's row), and nothing is stored; a wide model's predictions
are computed in chunks, so the API's peak memory stays within LABTRAIN_MAX_PREDICTION_MEMORY_BYTES
and a little more, with the same answers as the default chunking."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import Stack, api_process
from tests.integration.test_upload_limits import MIB, api_pid, peak, reset_peak

pytestmark = pytest.mark.integration

BOMB = {
    "dataset": {"name": "spirals", "params": {"n_samples": 1_000_000}},
    "model": {"widths": [65536]},
    "batch_size": "full",
    "epochs": 1,
    "device": "cuda",  # never trained here either way
}


@pytest.mark.timeout(60)
def test_a_run_that_would_not_fit_in_memory_is_refused_naming_the_limit(stack: Stack) -> None:
    name = f"huge-{secrets.token_hex(3)}"
    response = stack.client.post("/experiments", json=BOMB | {"name": name})
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["loc"] == ["body", "batch_size"]
    assert error["type"] == "too_much_memory"
    assert "LABTRAIN_MAX_RUN_MEMORY_BYTES" in error["msg"]
    assert "a batch of 600,000 rows" in error["msg"]
    sweep = {"name": name, "base": BOMB | {"batch_size": 64}, "variants": [{"name": "ok"}, {"name": "full",
             "batch_size": "full"}]}  # fmt: skip
    refused = stack.client.post("/sweeps", json=sweep)
    assert refused.status_code == 422, refused.text
    assert "LABTRAIN_MAX_RUN_MEMORY_BYTES" in refused.json()["detail"]
    assert "row 'full'" in refused.json()["detail"]
    assert [e for e in stack.client.get("/experiments").json()["items"] if e["name"] == name] == []
    assert [s for s in stack.client.get("/sweeps").json()["items"] if s["name"] == name] == []


WIDE = {
    "name": "wide",
    "dataset": {"name": "spirals", "params": {"n_samples": 200}},
    "model": {"widths": [65536]},
    "optimizer": {"name": "adam", "lr": 0.001},
    "batch_size": 64,
    "epochs": 1,
}


@pytest.fixture
def chunked(stack: Stack, tmp_path: Path) -> Iterator[httpx.Client]:
    """An API process of its own (its memory is this test's alone), with 16 MiB of activations per request."""
    env = {"LABTRAIN_MAX_PREDICTION_MEMORY_BYTES": str(16 * MIB)}
    with api_process(stack, env, tmp_path / "api.log", {}) as client:
        yield client


@pytest.mark.timeout(180)
def test_a_wide_models_predictions_are_chunked_within_the_memory_setting(stack: Stack, chunked: httpx.Client) -> None:
    created = stack.submit(WIDE)
    done = stack.wait_terminal(created["id"], timeout=150)
    assert done["status"] == "succeeded", done["error"]
    rows: list[Any] = np.random.default_rng(0).normal(size=(4096, 2)).round(4).tolist()
    url = f"/experiments/{created['id']}/predictions"
    assert chunked.post(url, json={"inputs": rows[:1]}).status_code == 200  # the model loaded and cached
    pid = api_pid(chunked)
    before = reset_peak(pid)
    response = chunked.post(url, json={"inputs": rows})
    assert response.status_code == 200, response.text
    grew = peak(pid) - before
    # Unchunked, the 4096 rows' hidden layer alone is 4096 × 65,536 floats = 1 GiB (twice, with its
    # activation); in chunks of 16 MiB the request holds its JSON, its answers and one chunk.
    assert grew < 200 * MIB, f"the API's peak memory grew {grew / MIB:.0f} MiB for one request"
    mine = response.json()["predictions"]
    theirs = stack.client.post(url, json={"inputs": rows}).json()["predictions"]  # 256 MiB chunks
    assert [p["label"] for p in mine] == [p["label"] for p in theirs]
    np.testing.assert_allclose(
        [p["probabilities"] for p in mine], [p["probabilities"] for p in theirs], rtol=1e-5, atol=1e-6
    )
