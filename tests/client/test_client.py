"""`labtrain.Client` against the real service (the `stack` fixture: the API over HTTP, two Celery
workers, Redis, SQLite and PostgreSQL): submit from a dict, a file or the pydantic spec, wait
on the event stream (and by polling when a proxy breaks it), metrics as a DataFrame,
predictions from a DataFrame, dicts and arrays, evaluations, the model and its local predictor,
plots, cancel; sweeps and their table; uploads from a DataFrame; typed errors."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

import labtrain
from labtrain import Client
from tests.conftest import ROOT, Stack, api_process, free_port
from tests.integration.test_experiments import parked_spec, tiny_spec

pytestmark = pytest.mark.integration

ROWS = [[0.5, -0.25], [-1.0, 1.0], [0.0, 0.0], [1.5, 0.75]]


@pytest.fixture
def client(stack: Stack) -> Any:
    with Client(stack.base_url) as c:
        yield c


@pytest.fixture(scope="module")
def trained(stack: Stack) -> Iterator[labtrain.Experiment]:
    """One tiny spirals model, trained through the client and waited for on its event stream."""
    with Client(stack.base_url) as c:
        run = c.submit(tiny_spec("client-trained", epochs=8)).wait(timeout=120)
        assert run.status == "succeeded", run.data["error"]
        yield run


@pytest.mark.timeout(120)
def test_submit_from_a_dict_a_file_or_the_pydantic_spec_and_wait(client: Client, tmp_path: Path) -> None:
    from ml.spec import ExperimentSpec

    spec = tiny_spec("client-submit", epochs=6)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "spec.json").write_text(json.dumps(spec | {"name": "client-json"}))
    runs = [
        client.submit(spec),
        client.submit(tmp_path / "spec.yaml"),
        client.submit(str(tmp_path / "spec.json")),
        client.submit(ExperimentSpec.model_validate(spec | {"name": "client-pydantic"})),
    ]
    assert [r.name for r in runs] == ["client-submit", "client-submit", "client-json", "client-pydantic"]
    assert len({r.id for r in runs}) == 4  # each call is its own experiment (its own Idempotency-Key)
    events: list[labtrain.Event] = []
    first = runs[0].wait(timeout=120, on_event=events.append)
    assert first is runs[0]
    assert first.status == "succeeded"
    assert first.data["epochs_done"] == 6
    assert [e.data["epoch"] for e in events if e.kind == "epoch"] == [1, 2, 3, 4, 5, 6]
    assert events[-1].kind == "status"
    assert events[-1].data["status"] == "succeeded"
    for run in runs[1:]:
        assert run.wait(timeout=120).status == "succeeded"
        assert run.refresh().data["spec"]["epochs"] == 6

    again = client.submit(spec, idempotency_key="client-same-key")
    assert client.submit(spec, idempotency_key="client-same-key").id == again.id


@pytest.mark.timeout(60)
def test_metrics_are_a_dataframe_with_one_row_per_epoch(trained: labtrain.Experiment) -> None:
    metrics = trained.metrics()
    assert isinstance(metrics, pd.DataFrame)
    assert list(metrics["epoch"]) == list(range(1, 9))
    assert {"train_loss", "val_loss", "val_accuracy", "seconds"} <= set(metrics.columns)
    assert metrics["val_accuracy"].between(0, 1).all()


@pytest.mark.timeout(60)
def test_predict_from_a_dataframe_dicts_and_arrays(stack: Stack, trained: labtrain.Experiment) -> None:
    want = stack.client.post(f"/experiments/{trained.id}/predictions", json={"inputs": ROWS}).json()["predictions"]
    labels = [p["label"] for p in want]
    frame = pd.DataFrame(ROWS, columns=["x1", "x2"], index=[10, 11, 12, 13])
    from_frame = trained.predict(frame)
    assert list(from_frame.index) == [10, 11, 12, 13]  # joins back onto the caller's rows
    assert list(from_frame.columns) == ["label", "p_0", "p_1"]
    assert list(from_frame["label"]) == labels
    assert from_frame[["p_0", "p_1"]].to_numpy() == pytest.approx(np.array([p["probabilities"] for p in want]))
    assert list(trained.predict([{"x1": a, "x2": b} for a, b in ROWS])["label"]) == labels
    assert list(trained.predict(np.array(ROWS))["label"]) == labels
    assert list(trained.predict(ROWS)["label"]) == labels
    with_target = frame.assign(label=[0, 1, 0, 1])  # spirals' target column is not a feature: left out
    assert list(trained.predict(with_target)["label"]) == labels
    with pytest.raises(labtrain.ValidationError) as refused:
        trained.predict(pd.DataFrame({"x1": [0.5]}))
    assert refused.value.status == 422
    assert refused.value.fields[0].startswith("inputs.0")


@pytest.mark.timeout(60)
def test_evaluate_download_predictor_and_plot(stack: Stack, trained: labtrain.Experiment, tmp_path: Path) -> None:
    before = trained.refresh().data["test_evaluations"]
    val = trained.evaluate("val")
    assert 0 <= val["accuracy"] <= 1
    test = trained.evaluate()
    assert 0 <= test["accuracy"] <= 1
    assert trained.refresh().data["test_evaluations"] == before + 1  # only the test look is counted
    assert [e["split"] for e in trained.evaluations()][-2:] == ["val", "test"]

    path = trained.download(tmp_path)
    assert path == tmp_path / f"{trained.id}.safetensors"
    assert path.read_bytes() == stack.client.get(f"/experiments/{trained.id}/model").content
    assert trained.download(tmp_path / "m.safetensors").read_bytes() == path.read_bytes()

    local = trained.predictor()
    served = stack.client.post(f"/experiments/{trained.id}/predictions", json={"inputs": ROWS}).json()["predictions"]
    assert [p["label"] for p in local.predict(ROWS)] == [p["label"] for p in served]

    png = trained.plot("learning-curves", tmp_path / "curves.png")
    assert png.startswith(b"\x89PNG")
    assert (tmp_path / "curves.png").read_bytes() == png
    with pytest.raises(labtrain.ValidationError) as unknown:
        trained.plot("pie-chart")
    assert unknown.value.fields == ["kind"]


@pytest.mark.timeout(60)
def test_cancel_and_a_wait_that_times_out(client: Client) -> None:
    parked = client.submit(parked_spec("client-parked"))  # the gpu queue: no test worker serves it
    assert parked.status == "queued"
    with pytest.raises(labtrain.WaitTimeout):
        parked.wait(timeout=1.0)
    assert parked.cancel().status == "cancelled"
    assert parked.wait(timeout=5).status == "cancelled"
    with pytest.raises(labtrain.Conflict) as ended:
        parked.cancel()
    assert ended.value.error == "ExperimentFinished"
    assert ended.value.status == 409


class BufferingProxy(httpx.HTTPTransport):
    """What a proxy that buffers responses does to an event stream: the client gets a page, not
    a stream. Everything else goes to the real service."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>buffered</html>")
        return super().handle_request(request)


@pytest.mark.timeout(90)
def test_wait_polls_when_the_event_stream_cannot_be_followed(stack: Stack) -> None:
    with Client(stack.base_url, transport=BufferingProxy()) as client:
        run = client.submit(tiny_spec("client-poll", epochs=5))
        with pytest.raises(labtrain.StreamLost):
            next(iter(client.events(run.id)))
        assert run.wait(timeout=90, poll_interval=0.2).status == "succeeded"


@pytest.mark.timeout(120)
def test_a_sweep_its_table_as_a_dataframe_and_its_experiments(client: Client, tmp_path: Path) -> None:
    body = {"name": "client-sweep", "base": tiny_spec("row", epochs=4),
            "variants": [{"name": "narrow", "model.neurons": 4}, {"name": "wide", "model.neurons": 16}]}  # fmt: skip
    sweep = client.submit_sweep(body)
    assert sweep.data["size"] == 2
    seen: list[dict[str, int]] = []
    done = sweep.wait(timeout=120, on_progress=lambda s: seen.append(dict(s.data["counts"])), poll_interval=0.2)
    assert done is sweep
    assert sweep.status == "finished"
    assert seen[-1] == {"succeeded": 2}
    table = sweep.table()
    assert isinstance(table, pd.DataFrame)
    assert list(table["name"]) == ["narrow", "wide"]
    assert {"par", "val_accuracy", "status", "best"} <= set(table.columns)
    assert list(table["par"]) == [2 * 4 + 4 + 4 * 4 + 4 + 4 + 1, 2 * 16 + 16 + 16 * 16 + 16 + 16 + 1]
    assert table["best"].sum() == 1
    members = sweep.experiments()
    assert [e.id for e in members] == sweep.data["experiment_ids"]
    assert all(isinstance(e, labtrain.Experiment) and e.status == "succeeded" for e in members)
    assert sweep.plot(tmp_path / "compare.png").startswith(b"\x89PNG")
    assert client.sweep(sweep.id).data["counts"] == {"succeeded": 2}


@pytest.mark.timeout(90)
def test_experiments_iterates_over_pages_and_filters(client: Client) -> None:
    body = {"name": "client-pages", "base": parked_spec("row"), "variants": [{"name": f"r{i}"} for i in range(5)]}
    sweep = client.submit_sweep(body)
    members = list(client.experiments(sweep=sweep.id, page_size=2))  # three pages
    assert sorted(e.id for e in members) == sorted(sweep.data["experiment_ids"])
    sweep.cancel()
    cancelled = {e.id for e in client.experiments(status="cancelled", page_size=50)}
    assert set(sweep.data["experiment_ids"]) <= cancelled
    assert list(client.experiments(sweep=sweep.id, tag="no-such-tag")) == []  # tests/client/test_tags.py: more
    with pytest.raises(labtrain.ValidationError) as refused:
        list(client.experiments(status="sleeping"))
    assert refused.value.fields == ["status"]


@pytest.mark.timeout(120)
def test_upload_a_dataframe_whose_target_is_not_named_target(client: Client, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 2))
    frame = pd.DataFrame({"width": x[:, 0], "height": x[:, 1], "wide": (x[:, 0] > x[:, 1]).astype(int)})
    name = f"client-df-{rng.integers(1 << 30)}"
    dataset = client.upload(frame, target="wide", name=name)
    assert isinstance(dataset, labtrain.Dataset)
    assert dataset.name == name
    assert dataset.features == ["width", "height"]
    assert list(dataset.targets) == ["wide"]
    assert dataset.id in [d.id for d in client.datasets()]
    assert "spirals" in [d.name for d in client.datasets()]
    assert client.dataset(dataset.id).data == dataset.data

    spec = tiny_spec("client-on-upload", epochs=20, dataset=dataset.spec)
    spec.pop("loss")
    run = client.submit(spec | {"loss": "bce"}).wait(timeout=120)
    assert run.status == "succeeded", run.data["error"]
    predictions = run.predict(frame.head(6))  # the `wide` column is the target: left out, not refused
    assert list(predictions.index) == list(range(6))
    assert set(predictions["label"]) <= {0, 1}

    frame.to_csv(tmp_path / "shapes.csv", index=False)
    from_file = client.upload(tmp_path / "shapes.csv", target="wide", name=f"{name}-file")
    assert from_file.data["n_samples"] == 240
    from_file.delete()
    with pytest.raises(labtrain.NotFound):
        client.dataset(from_file.id)
    with pytest.raises(labtrain.ValidationError) as refused:
        client.upload(frame, target="no-such-column", name=f"{name}-bad")
    assert refused.value.fields  # the field or column is named


@pytest.mark.timeout(60)
def test_errors_carry_the_code_the_status_and_the_field_paths(client: Client) -> None:
    with pytest.raises(labtrain.NotFound) as missing:
        client.experiment("no-such-id")
    assert (missing.value.status, missing.value.error) == (404, "ExperimentNotFound")
    assert "no-such-id" in missing.value.detail
    with pytest.raises(labtrain.ValidationError) as invalid:
        client.submit(tiny_spec("bad", model={"type": "mlp", "neurons": 0}, loss="hinge"))
    assert invalid.value.status == 422
    assert "model.neurons" in invalid.value.fields
    assert "loss" in invalid.value.fields
    assert str(invalid.value).startswith("ValidationError: ")
    parked = client.submit(parked_spec("client-conflict"))
    with pytest.raises(labtrain.Conflict) as early:
        parked.predict(ROWS)
    assert early.value.error == "ExperimentNotFinished"
    parked.cancel()
    with pytest.raises(TypeError, match="a spec is a dict"):
        client.submit(42)

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(labtrain.ServiceUnreachable, match="cannot reach the service"), Client(dead) as nobody:
        nobody.experiment("x")
    assert not Client(dead).health()


@pytest.mark.timeout(90)
def test_api_key_and_a_full_queue(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"LABTRAIN_API_KEYS": "alice:key-a,bob:key-b", "LABTRAIN_MAX_QUEUED_PER_OWNER": "1"}
    with api_process(stack, env, tmp_path / "api.log", {}) as keyed:
        url = str(keyed.base_url).rstrip("/")
        with pytest.raises(labtrain.Unauthorized):
            Client(url, api_key="").experiment("x")
        monkeypatch.setenv("LABTRAIN_API_KEY", "key-a")
        alice = Client(url)  # the key from LABTRAIN_API_KEY
        first = alice.submit(parked_spec("alice-parked"))
        with pytest.raises(labtrain.NotFound):
            Client(url, api_key="key-b").experiment(first.id)
        # The queue is full: 429 with Retry-After 30, longer than this client waits, so it is raised.
        with pytest.raises(labtrain.RateLimited) as full:
            Client(url, max_retry_wait=1).submit(parked_spec("alice-second"))
        assert (full.value.status, full.value.retry_after) == (429, 30.0)
        first.cancel()


class Busy(BaseHTTPRequestHandler):
    """A loopback server that answers 429 (Retry-After: 1) twice, then 202, recording each request."""

    seen: ClassVar[list[tuple[float, str | None]]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Busy.seen.append((time.monotonic(), self.headers.get("idempotency-key")))
        if len(Busy.seen) <= 2:
            self._answer(429, {"error": "TooManyQueued", "detail": "full"}, {"Retry-After": "1"})
        else:
            self._answer(202, {"id": "e1", "name": "x", "status": "queued"}, {})

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"content-type": "application/json", "content-length": str(len(data)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


def test_429_is_retried_after_its_retry_after_with_the_same_idempotency_key() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{server.server_port}") as client:
            assert client.submit({"name": "x"}).id == "e1"
    finally:
        server.shutdown()
    assert len(Busy.seen) == 3
    assert len({key for _, key in Busy.seen}) == 1  # a retried submission cannot queue twice
    gaps = [b[0] - a[0] for a, b in zip(Busy.seen, Busy.seen[1:], strict=False)]
    assert min(gaps) >= 0.9  # each retry waited for its Retry-After (a lower bound: it cannot flake)


@pytest.mark.timeout(60)
def test_url_from_the_environment_like_labtrain_up(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    assert labtrain.default_url({}) == "http://127.0.0.1:8000"
    assert labtrain.default_url({"LABTRAIN_HOST": "0.0.0.0", "LABTRAIN_PORT": "9001"}) == "http://127.0.0.1:9001"
    assert labtrain.default_url({"LABTRAIN_HOST": "::"}) == "http://[::1]:8000"
    assert labtrain.default_url({"LABTRAIN_URL": "lab:8080/", "LABTRAIN_PORT": "1"}) == "http://lab:8080"
    monkeypatch.delenv("LABTRAIN_URL", raising=False)
    monkeypatch.setenv("LABTRAIN_HOST", "127.0.0.1")
    monkeypatch.setenv("LABTRAIN_PORT", str(stack.port))
    with Client() as client:
        assert client.url == stack.base_url
        assert client.health()


def test_the_package_imports_only_httpx() -> None:
    code = (
        "import sys, labtrain; heavy = {'torch', 'ml', 'core', 'api', 'cli', 'pandas', 'numpy', 'yaml', 'celery'}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
