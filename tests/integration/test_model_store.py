"""The stored models behind predictions, on SQLite and PostgreSQL: test evaluations recorded and
counted, the model file rebuilt outside the service, large models stored as files, and a model
cache that never answers with a replaced or wrong model, even under load."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from safetensors.torch import load as load_tensors
from sqlalchemy import select

from core.db import get_engine, session_factory
from core.tables import Artifact
from tests.conftest import Stack, store_unsent, wait_for
from tests.integration.serving import (
    assert_same,
    expected_predictions,
    header,
    predict,
    sample_rows,
)
from tests.integration.test_experiments import tiny_spec

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_test_evaluations_are_recorded_and_counted(stack: Stack, trained: dict[str, dict[str, Any]]) -> None:
    exp = trained["binary"]["experiment"]
    url = f"/experiments/{exp['id']}/evaluations"
    assert stack.experiment(exp["id"])["test_evaluations"] == 0

    first = stack.client.post(url, json={"split": "test"})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["split"] == "test"
    assert body["test_evaluations"] == 1
    assert 0.0 <= body["metrics"]["accuracy"] <= 1.0
    assert body["metrics"]["rows"] == 80  # 20 % of 400
    second = stack.client.post(url)  # no body: the test split
    assert second.json()["test_evaluations"] == 2
    assert second.json()["metrics"] == body["metrics"]

    val = stack.client.post(url, json={"split": "val"})
    assert val.status_code == 201
    assert val.json()["test_evaluations"] == 2  # the validation split is not counted
    served = stack.experiment(exp["id"])["metrics"]["served"]  # the kept weights' epoch (keep: best)
    assert val.json()["metrics"]["accuracy"] == pytest.approx(served["val_accuracy"], abs=1e-6)

    with ThreadPoolExecutor(4) as pool:  # concurrent evaluations each count once
        counts = sorted(r.json()["test_evaluations"] for r in pool.map(lambda _: stack.client.post(url), range(4)))
    assert counts == [3, 4, 5, 6]
    assert stack.experiment(exp["id"])["test_evaluations"] == 6

    listed = stack.client.get(url).json()["items"]
    assert [e["split"] for e in listed] == ["test", "test", "val", "test", "test", "test", "test"]
    assert listed[0]["id"] == body["id"]
    assert listed[0]["metrics"] == body["metrics"]

    for payload in ({"split": "train"}, {"split": "all"}, {"split": "test", "extra": 1}):
        refused = stack.client.post(url, json=payload)
        assert refused.status_code == 422, payload
        assert refused.json()["error"] == "ValidationError"
    assert stack.experiment(exp["id"])["test_evaluations"] == 6


@pytest.mark.timeout(120)
def test_evaluations_report_each_tasks_metrics_in_original_units(
    stack: Stack, trained: dict[str, dict[str, Any]]
) -> None:
    def evaluate(kind: str, split: str) -> dict[str, Any]:
        url = f"/experiments/{trained[kind]['experiment']['id']}/evaluations"
        response = stack.client.post(url, json={"split": split})
        assert response.status_code == 201, response.text
        return response.json()["metrics"]

    gaussian = trained["gaussian"]["experiment"]["id"]
    test = evaluate("gaussian", "test")
    assert test["rows"] == 586
    assert 10_000 < test["rmse"] < 200_000  # USD
    assert 0.0 < test["within_1_sigma"] <= test["within_2_sigma"] <= 1.0
    assert 1_000 < test["mean_sigma"] < 300_000
    val = evaluate("gaussian", "val")
    served = stack.experiment(gaussian)["metrics"]["served"]  # the kept weights' epoch (keep: best)
    assert val["rmse"] == pytest.approx(served["val_rmse"], rel=1e-4)
    assert val["nll"] == pytest.approx(served["val_nll"], rel=1e-4)

    two = evaluate("two_targets", "val")
    served = stack.experiment(trained["two_targets"]["experiment"]["id"])["metrics"]["served"]
    assert two["accuracy_digit"] == pytest.approx(served["val_accuracy_digit"], abs=1e-6)
    assert two["accuracy_color"] == pytest.approx(served["val_accuracy_color"], abs=1e-6)
    assert evaluate("regression", "test")["rmse"] > 0


# -- the model file ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_downloaded_model_rebuilds_outside_the_service(stack: Stack, trained: dict[str, dict[str, Any]]) -> None:
    from ml.predict import load_predictor

    case = trained["gaussian"]
    exp = case["experiment"]
    response = stack.client.get(f"/experiments/{exp['id']}/model")
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="serve-gaussian-{exp["id"]}.safetensors"'
    assert response.headers["etag"] == f'"{hashlib.sha256(response.content).hexdigest()}"'
    meta = header(response.content)
    assert meta["spec"] == exp["spec"]
    assert meta["info"]["features"][0] == "Lot_Area"
    assert {"norm.x_mean", "norm.x_std", "norm.y_mean.Sale_Price", "norm.y_std.Sale_Price"} <= set(
        load_tensors(response.content)
    )
    served = predict(stack.client, exp["id"], case["rows"]).json()["predictions"]
    assert_same(load_predictor(response.content).predict(case["rows"]), served)


@pytest.mark.timeout(120)
def test_large_models_are_files_in_the_artifact_directory(
    stack: Stack, small_api: httpx.Client, artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker with LABTRAIN_ARTIFACT_DIR and a 0-byte inline limit (the runner, in this process,
    on the stack's database): checkpoints and the model become files, replaced ones are deleted;
    an API with the directory serves the model, one without says why it cannot."""
    from core.settings import get_settings
    from worker.runner import run_experiment

    spec = tiny_spec("serve-file", epochs=8)
    exp_id = store_unsent(stack.database_url, spec)  # stored, never enqueued
    with monkeypatch.context() as env:
        for name, value in stack.env.items():
            if name.startswith("LABTRAIN_"):
                env.setenv(name, value)
        env.setenv("LABTRAIN_ARTIFACT_DIR", str(artifact_dir))
        env.setenv("LABTRAIN_ARTIFACT_INLINE_MAX_BYTES", "0")
        env.setenv("LABTRAIN_CHECKPOINT_SECONDS", "0")  # a checkpoint file every epoch
        get_settings.cache_clear()
        try:
            assert run_experiment(exp_id, worker="test-process") == "succeeded"
        finally:
            get_settings.cache_clear()

    with session_factory(get_engine(stack.database_url))() as session:
        rows = session.execute(
            select(Artifact.kind, Artifact.location, Artifact.data.is_(None)).where(Artifact.experiment_id == exp_id)
        ).all()
    assert [(kind, is_file) for kind, _, is_file in rows] == [("model", True)]  # the checkpoint is gone
    location = rows[0][1]
    written = sorted(p.relative_to(artifact_dir).as_posix() for p in (artifact_dir / exp_id).iterdir())
    assert written == [location]  # every checkpoint file was deleted once replaced, no temporary file left

    downloaded = small_api.get(f"/experiments/{exp_id}/model")
    assert downloaded.status_code == 200
    assert downloaded.content == (artifact_dir / location).read_bytes()
    rows_in = sample_rows(spec, 8)
    served = predict(small_api, exp_id, rows_in)
    assert served.status_code == 200, served.text
    assert_same(served.json()["predictions"], expected_predictions(downloaded.content, rows_in))

    for response in (predict(stack.client, exp_id, rows_in), stack.client.get(f"/experiments/{exp_id}/model")):
        assert response.status_code == 503
        assert response.json()["error"] == "ModelUnavailable"
        assert "LABTRAIN_ARTIFACT_DIR is not set in this process" in response.json()["detail"]


@pytest.mark.timeout(60)
def test_a_replaced_model_is_never_answered_from_the_cache(stack: Stack, trained: dict[str, dict[str, Any]]) -> None:
    """The cache key is the stored blob's identity, not the experiment: once the row names another
    model (a re-run writing its artifact), the next answer is the new model's."""
    from core.artifact_store import ArtifactStore

    exp = stack.wait_terminal(stack.submit(tiny_spec("serve-replaced", epochs=5, seed=3))["id"])
    assert exp["status"] == "succeeded"
    rows = trained["binary"]["rows"]
    before = predict(stack.client, exp["id"], rows).json()["predictions"]  # now cached in the API
    assert_same(before, expected_predictions(stack.client.get(f"/experiments/{exp['id']}/model").content, rows))

    replacement = trained["binary"]["model"]
    with session_factory(get_engine(stack.database_url)).begin() as session:
        ArtifactStore(None, 0).put(session, exp["id"], "model", replacement, epoch=15)
    after = predict(stack.client, exp["id"], rows).json()["predictions"]
    assert_same(after, expected_predictions(replacement, rows))
    assert after != before
    assert stack.client.get(f"/experiments/{exp['id']}/model").content == replacement


# -- the cache under load ----------------------------------------------------------------------


@pytest.mark.timeout(180)
def test_a_small_cache_never_answers_with_the_wrong_model(
    stack: Stack, small_api: httpx.Client, trained: dict[str, dict[str, Any]]
) -> None:
    """Seven models through a 2-model cache from 16 threads (most requests evict), while one
    experiment trains and another is cancelled: each answer is its own model's, and an experiment
    serves nothing until it has succeeded."""
    extra = [tiny_spec(f"serve-load-{i}", epochs=5, seed=i, dataset={"name": "spirals", "params": {"n_samples": 300}})
             for i in range(2)]  # fmt: skip
    cases = dict(trained)
    for i, spec in enumerate(extra):
        exp = stack.wait_terminal(stack.submit(spec)["id"])
        assert exp["status"] == "succeeded"
        cases[f"extra{i}"] = {
            "experiment": exp,
            "model": stack.client.get(f"/experiments/{exp['id']}/model").content,
            "rows": trained["binary"]["rows"],  # the same rows: only the model tells the answers apart
        }
    expected = {k: expected_predictions(c["model"], c["rows"]) for k, c in cases.items()}
    assert expected["extra0"] != expected["extra1"] != expected["binary"]

    failures: list[str] = []
    stop = threading.Event()
    late: dict[str, Any] = {}

    def storm(seed: int) -> int:
        rng = random.Random(seed)
        client = httpx.Client(base_url=str(small_api.base_url), timeout=30, headers=small_api.headers)
        done = 0
        with client:
            while not stop.is_set() or done < 20:
                kind = rng.choice(list(cases))
                picks = rng.sample(range(len(cases[kind]["rows"])), rng.randint(1, 6))
                response = predict(client, cases[kind]["experiment"]["id"], [cases[kind]["rows"][i] for i in picks])
                if response.status_code != 200:
                    failures.append(f"{kind}: {response.status_code} {response.text[:200]}")
                else:
                    try:
                        assert_same(response.json()["predictions"], [expected[kind][i] for i in picks])
                    except AssertionError as exc:
                        failures.append(f"{kind}: wrong answer {exc}")
                done += 1
        return done

    def lifecycle() -> None:
        """Meanwhile: one experiment trains to success, another runs and is cancelled."""
        fresh = stack.submit(tiny_spec("serve-fresh", epochs=30, seed=7))
        long = stack.submit(tiny_spec("serve-long", epochs=100_000, seed=8))
        statuses = set()
        while True:
            response = predict(small_api, fresh["id"], trained["binary"]["rows"])
            if response.status_code == 200:
                late["fresh"] = (fresh["id"], response.json()["predictions"])
                break
            assert response.status_code == 409, response.text
            statuses.add(response.json()["status"])
            time.sleep(0.05)
        wait_for(lambda: stack.experiment(long["id"])["status"] == "running", 30, what="the long run to start")
        running = predict(small_api, long["id"], trained["binary"]["rows"])
        late["running"] = (running.status_code, running.json())
        stack.client.post(f"/experiments/{long['id']}/cancel")
        stack.wait_terminal(long["id"], timeout=30)
        cancelled = predict(small_api, long["id"], trained["binary"]["rows"])
        late["cancelled"] = (cancelled.status_code, cancelled.json())
        late["statuses"] = statuses

    with ThreadPoolExecutor(17) as pool:
        storms = [pool.submit(storm, seed) for seed in range(16)]
        pool.submit(lifecycle).result(timeout=120)
        stop.set()
        total = sum(s.result(timeout=60) for s in storms)

    assert failures == [], failures[:5]
    assert total >= 16 * 20
    fresh_id, fresh_answers = late["fresh"]
    fresh_model = stack.client.get(f"/experiments/{fresh_id}/model").content
    assert_same(fresh_answers, expected_predictions(fresh_model, trained["binary"]["rows"]))
    assert late["statuses"] <= {"queued", "running"}
    assert late["running"][0] == 409
    assert late["running"][1]["status"] == "running"
    assert late["cancelled"][0] == 409
    assert late["cancelled"][1]["status"] == "cancelled"
    # And afterwards, every model once more, in turn, through the 2-model cache.
    for kind, case in cases.items():
        assert_same(predict(small_api, case["experiment"]["id"], case["rows"]).json()["predictions"], expected[kind])
