"""Operations, on a stack of its own (a fresh database and Redis database, so every count is
exact): GET /metrics after training and predictions, JSON logs of the API and of a worker with
the experiment id on the training lines, no API key in any log, and the request body limit."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ROOT,
    Stack,
    free_port,
    fresh_database,
    reserved_redis_db,
    start_process,
)
from tests.integration.test_experiments import parked_spec, tiny_spec

pytestmark = pytest.mark.integration

KEY = "ops-" + secrets.token_hex(12)
MAX_BODY = 64 * 1024
EXPERIMENT_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "diverged")


def _start_worker(s: Stack, data_dir: Path) -> tuple[str, Path, Path]:
    """A worker whose stdout (Celery's banner) and stderr (the log) are kept apart."""
    from worker.run import worker_argv

    hostname = f"ops-{secrets.token_hex(3)}@labtrain-test"
    out, err = data_dir / "worker.stdout", data_dir / "worker.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        s.workers[hostname] = subprocess.Popen(
            worker_argv(["cpu"], 1, hostname), cwd=ROOT, env=s.env, stdout=stdout, stderr=stderr, start_new_session=True
        )
    s.logs[hostname] = err
    return hostname, out, err


@contextmanager
def own_stack(
    kind: str, redis_base_url: str, data_dir: Path, env_extra: dict[str, str]
) -> Iterator[tuple[Stack, Path, Path]]:
    """A stack on a fresh database and a Redis database of its own: the API (log level info) and
    one worker whose stdout and stderr are kept apart; yields it with the worker's two files.
    `env_extra` may set LABTRAIN_API_KEYS: the client sends the key of its first owner."""
    from core.db import upgrade_database

    with fresh_database(kind, data_dir) as database_url, reserved_redis_db(redis_base_url) as redis_url:
        upgrade_database(database_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABTRAIN_")}
        env.update(
            LABTRAIN_DATABASE_URL=database_url,
            LABTRAIN_REDIS_URL=redis_url,
            LABTRAIN_DATA_DIR=str(data_dir),
            LABTRAIN_DEVICE="cpu",
            LABTRAIN_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(env_extra)
        keys = env.get("LABTRAIN_API_KEYS")
        headers = {"X-API-Key": keys.split(",")[0].split(":", 1)[1]} if keys else {}
        port = free_port()
        api_log = data_dir / "api.log"
        argv = [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]  # fmt: skip
        api = start_process(argv, env, api_log)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0, headers=headers)
        s = Stack(f"http://127.0.0.1:{port}", database_url, redis_url, env, client, api, logs={"api": api_log})
        s.data_dir, s.port = data_dir, port
        try:
            _, worker_out, worker_err = _start_worker(s, data_dir)
            s.wait_ready(1)
            yield s, worker_out, worker_err
        finally:
            s.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ops(
    request: pytest.FixtureRequest, redis_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """API (JSON logs, a key, a 64 KiB body limit) and one worker, on a fresh database; two
    spirals experiments trained, one parked on the gpu queue, three predictions."""
    data_dir = tmp_path_factory.mktemp(f"ops-{request.param}")
    env = {"LABTRAIN_LOG_FORMAT": "json", "LABTRAIN_API_KEYS": f"ops:{KEY}", "LABTRAIN_MAX_BODY_BYTES": str(MAX_BODY)}
    with own_stack(request.param, redis_base_url, data_dir, env) as (s, worker_out, worker_err):
        before = scrape(s)
        trained = [s.submit(tiny_spec(f"ops-{i}", epochs=15 + 5 * i)) for i in range(2)]
        parked = s.submit(parked_spec("ops-parked"))
        done = [s.wait_terminal(e["id"], timeout=90) for e in trained]
        assert [e["status"] for e in done] == ["succeeded", "succeeded"], [e["error"] for e in done]
        for rows in ([[0.5, -0.25]], [[0.1, 0.2], {"x1": 1.0, "x2": 2.0}], [[0.0, 0.0]]):
            response = s.client.post(f"/experiments/{done[0]['id']}/predictions", json={"inputs": rows})
            assert response.status_code == 200, response.text
        yield {
            "stack": s,
            "before": before,
            "trained": done,
            "parked": parked,
            "predictions": 3,
            "worker_stdout": worker_out,
            "worker_stderr": worker_err,
            "api_log": data_dir / "api.log",
        }


def scrape(s: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics parsed by prometheus_client: (sample name, sorted labels) → value."""
    response = s.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_experiments_queues_epochs_and_predictions(ops: dict[str, Any]) -> None:
    s: Stack = ops["stack"]
    before, after = ops["before"], scrape(s)

    for status in EXPERIMENT_STATUSES:  # a fresh database: exactly what this module created
        expected = {"succeeded": 2, "queued": 1}.get(status, 0)
        assert before[("labtrain_experiments", (("status", status),))] == 0
        assert after[("labtrain_experiments", (("status", status),))] == expected, status
    # The parked experiment's message waits in the gpu queue, which no worker here serves.
    assert after[("labtrain_queue_depth", (("queue", "gpu"),))] == 1
    assert after[("labtrain_queue_depth", (("queue", "cpu"),))] == 0
    assert after[("labtrain_dependency_up", (("dependency", "database"),))] == 1
    assert after[("labtrain_dependency_up", (("dependency", "redis"),))] == 1

    # The epoch histogram covers every stored epoch: those of the two trained experiments.
    epochs = [e for exp in ops["trained"] for e in s.epochs(exp["id"])]
    assert len(epochs) == 15 + 20
    assert after[("labtrain_epoch_seconds_count", ())] == len(epochs)
    assert after[("labtrain_epoch_seconds_sum", ())] == pytest.approx(sum(e["seconds"] for e in epochs), rel=1e-9)
    assert after[("labtrain_epoch_seconds_bucket", (("le", "+Inf"),))] == len(epochs)
    for bound in ("0.01", "0.1", "1.0"):
        n = sum(1 for e in epochs if e["seconds"] <= float(bound))
        assert after[("labtrain_epoch_seconds_bucket", (("le", bound),))] == n, bound

    predictions = ops["predictions"]
    assert before[("labtrain_prediction_seconds_count", ())] == 0
    assert after[("labtrain_prediction_seconds_count", ())] == predictions
    assert after[("labtrain_prediction_seconds_bucket", (("le", "+Inf"),))] == predictions
    assert 0 < after[("labtrain_prediction_seconds_sum", ())] < 60
    route = (("method", "POST"), ("route", "/experiments/{experiment_id}/predictions"), ("status", "200"))
    assert after[("labtrain_http_request_seconds_count", route)] == predictions

    # One more prediction moves the count by exactly one.
    response = s.client.post(f"/experiments/{ops['trained'][1]['id']}/predictions", json={"inputs": [[1.0, 1.0]]})
    assert response.status_code == 200, response.text
    assert scrape(s)[("labtrain_prediction_seconds_count", ())] == predictions + 1
    ops["predictions"] += 1


def test_metrics_need_a_key_like_every_route_but_healthz(ops: dict[str, Any]) -> None:
    s: Stack = ops["stack"]
    anonymous = httpx.get(f"{s.base_url}/metrics", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "Unauthorized"
    assert httpx.get(f"{s.base_url}/healthz", timeout=10).status_code == 200
    unmatched = (("method", "GET"), ("route", "unmatched"), ("status", "404"))
    assert s.client.get("/no/such/route").status_code == 404
    assert scrape(s)[("labtrain_http_request_seconds_count", unmatched)] >= 1


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}: a log line that is not JSON: {line[:300]!r}")
    return records


def test_worker_logs_are_json_with_the_experiment_id_on_training_lines(ops: dict[str, Any]) -> None:
    records = _json_lines(ops["worker_stderr"])
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    for exp in ops["trained"]:
        mine = [r for r in records if exp["id"] in r["message"]]
        training = [r for r in mine if r["logger"] == "labtrain.worker"]
        assert len(training) >= 2, mine  # "attempt 1 on ..." and "succeeded"
        assert all(r.get("experiment_id") == exp["id"] for r in training), training
        assert any(r["message"].endswith("succeeded") for r in training), training
    # Records outside a task name no experiment.
    assert any("experiment_id" not in r for r in records)
    # Celery's banner goes to stdout, apart from the log: no JSON record there.
    assert all(not line.startswith("{") for line in ops["worker_stdout"].read_text().splitlines())


def test_api_logs_are_json_with_the_request_fields(ops: dict[str, Any]) -> None:
    records = _json_lines(ops["api_log"])
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    posts = [r for r in access if r.get("method") == "POST" and r.get("path") == "/experiments"]
    assert [r["status"] for r in posts] == [202, 202, 202]
    assert all("color_message" not in r for r in records)


def test_api_keys_never_appear_in_logs(ops: dict[str, Any]) -> None:
    s: Stack = ops["stack"]
    wrong = "wrong-" + secrets.token_hex(12)
    assert httpx.get(f"{s.base_url}/experiments", headers={"X-API-Key": wrong}, timeout=10).status_code == 401
    assert httpx.get(f"{s.base_url}/experiments", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert s.client.get("/experiments").status_code == 200
    time.sleep(0.5)  # the access lines of the requests above
    logs = {p.name: p.read_text(errors="replace") for p in (ops["api_log"], ops["worker_stderr"], ops["worker_stdout"])}
    assert "/experiments" in logs["api.log"]
    for name, text in logs.items():
        assert KEY not in text, name
        assert wrong not in text, name


# -- the request body limit ------------------------------------------------------------------


def _raw_request(s: Stack, head: str) -> tuple[int, dict[str, Any]]:
    """Send the request head alone on a socket; the status and the JSON answer."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    header, _, payload = data.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(payload)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_a_declared_length_above_the_limit_is_refused_before_the_body_is_read(ops: dict[str, Any]) -> None:
    s: Stack = ops["stack"]
    head = (
        f"POST /experiments HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
    )
    # Not a byte of the announced gigabyte is sent: a server waiting for it would never answer
    # (the socket's 10 s timeout fails the test).
    status, answer = _raw_request(s, head)
    assert status == 413
    assert answer["error"] == "RequestTooLarge"
    assert answer["limit"] == MAX_BODY
    assert "1,000,000,000 bytes" in answer["detail"]
    assert "LABTRAIN_MAX_BODY_BYTES" in answer["detail"]


def test_a_chunked_body_is_counted_and_refused_past_the_limit(ops: dict[str, Any]) -> None:
    s: Stack = ops["stack"]
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"name": "'
        for _ in range(64):  # 64 × 4 KiB = 4× the limit, if it were all read
            sent += 4096
            yield b"x" * 4096
        yield b'"}'

    response = s.client.post("/experiments", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "RequestTooLarge"
    assert response.json()["limit"] == MAX_BODY
    assert f"{MAX_BODY:,} bytes (LABTRAIN_MAX_BODY_BYTES)" in response.json()["detail"]


def test_a_body_within_the_limit_is_read_as_usual(ops: dict[str, Any]) -> None:
    s: Stack = ops["stack"]
    body = json.dumps(tiny_spec("padded", epochs=1)).encode()
    padded = body[:-1] + b" " * (MAX_BODY - len(body)) + b"}"  # exactly the limit: JSON whitespace
    assert len(padded) == MAX_BODY
    response = s.client.post("/experiments", content=padded, headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    over = s.client.post("/experiments", content=padded + b" ", headers={"Content-Type": "application/json"})
    assert over.status_code == 413
    assert over.json()["error"] == "RequestTooLarge"
    s.wait_terminal(response.json()["id"], timeout=60)


def test_uploads_keep_their_own_larger_limit(ops: dict[str, Any]) -> None:
    s: Stack = ops["stack"]
    rows = "\n".join(f"{i % 7},{i % 5},{i % 2}" for i in range(30_000))  # ~ 180 KB, above the body limit
    data = f"a,b,label\n{rows}\n".encode()
    assert len(data) > MAX_BODY
    response = s.client.post(
        "/datasets", files={"file": ("big.csv", data, "text/csv")}, data={"target": "label", "name": "big"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["sizes"]


def test_metrics_still_answer_after_the_limit_tests(ops: dict[str, Any]) -> None:
    s: Stack = ops["stack"]
    samples = scrape(s)
    refused = (("method", "POST"), ("route", "/experiments"), ("status", "413"))
    assert samples[("labtrain_http_request_seconds_count", refused)] >= 3
