"""Fixtures of the serving tests (test_predictions, test_model_store): one trained experiment per
task kind, and a second API process with a small cache, a row limit, an artifact directory and keys;
and of the fault tests (test_faults, test_attempts): a fresh database and a Redis of the test's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, api_process, fresh_database
from tests.integration.faults import RedisServer
from tests.integration.serving import ALICE_KEY, DEFAULT_KEY, MAX_ROWS, SMALL_CACHE, SPECS, sample_rows


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, dict[str, Any]]:
    """One succeeded experiment per task kind, with its downloaded model and rows to ask about."""
    created = {kind: stack.submit(spec) for kind, spec in SPECS.items()}
    out: dict[str, dict[str, Any]] = {}
    for kind, exp in created.items():
        done = stack.wait_terminal(exp["id"], timeout=90)
        assert done["status"] == "succeeded", done["error"]
        model = stack.client.get(f"/experiments/{done['id']}/model")
        assert model.status_code == 200, model.text
        out[kind] = {"experiment": done, "model": model.content, "rows": sample_rows(SPECS[kind], 12)}
    return out


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def small_api(stack: Stack, artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A second API process on the same database and Redis: a 2-model cache, at most 50 rows per
    request, the artifact directory, and API keys: "default" (who owns the stack's experiments) and
    "alice". The client sends default's key."""
    env = {
        "LABTRAIN_MODEL_CACHE_SIZE": str(SMALL_CACHE),
        "LABTRAIN_MAX_PREDICTION_ROWS": str(MAX_ROWS),
        "LABTRAIN_ARTIFACT_DIR": str(artifact_dir),
        "LABTRAIN_API_KEYS": f"default:{DEFAULT_KEY},alice:{ALICE_KEY}",
    }
    log = tmp_path_factory.mktemp("small-api") / "api.log"
    with api_process(stack, env, log, {"X-API-Key": DEFAULT_KEY}) as client:
        yield client


# -- the fault tests' fixtures ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own (the session's `stack` never sees it)."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def postgres_db(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()
