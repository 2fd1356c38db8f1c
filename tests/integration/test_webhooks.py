"""Signed webhooks through the real stack: the API checks the destination, a real worker ends the
run and a real worker POSTs the event to a receiver on loopback (a threading HTTP server here),
which verifies the signature with the owner's secret, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from core.broker import build_celery
from core.settings import Settings
from core.webhooks import forbidden_address, parse_allow, post
from tests.conftest import Stack, api_process, reserved_redis_db, start_stack, wait_for

pytestmark = pytest.mark.integration

ALLOW = "127.0.0.1:*,169.254.169.254:*,[fe80::1]:*"  # link-local allowed on purpose: still refused


class Receiver:
    """An HTTP server on loopback that records every POST and answers the codes it is given, in
    order (200 once they run out)."""

    def __init__(self, codes: list[int] | None = None) -> None:
        self.codes = list(codes or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n: int, timeout: float = 90.0) -> list[tuple[dict[str, str], bytes]]:
        wait_for(lambda: len(self.requests) >= n, timeout, interval=0.1, what=f"{n} webhook request(s)")
        return self.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def hooks(database_url: str, redis_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own (own Redis database: no other stack's worker takes its messages) with
    loopback destinations allowed and a short backoff."""
    env = {
        "LABTRAIN_WEBHOOK_ALLOW": ALLOW,
        "LABTRAIN_WEBHOOK_BACKOFF_SECONDS": "0.5",
        "LABTRAIN_RECONCILE_SECONDS": "2",
    }
    with reserved_redis_db(redis_base_url) as redis_url:
        with start_stack(database_url, redis_url, tmp_path_factory.mktemp("hooks"), workers=1, env_extra=env) as s:
            yield s


def spec(notify: dict[str, Any] | None, epochs: int = 3, name: str = "hooked") -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "dataset": {"name": "spirals", "params": {"n_samples": 300, "noise": 0.1}, "seed": 0},
        "model": {"type": "mlp", "hidden_layers": 1, "neurons": 8, "activation": "relu"},
        "optimizer": {"name": "adam", "lr": 0.01},
        "batch_size": 64,
        "epochs": epochs,
    }
    if notify is not None:
        body["notify"] = notify
    return body


def verify_signature(secret: str, header: str, body: bytes, tolerance: float = 300.0) -> bool:
    """The README's receiver snippet: HMAC-SHA256 of "<t>.<raw body>", and `t` within the window."""
    fields = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(fields["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def deliveries(stack: Stack, path: str) -> list[dict[str, Any]]:
    response = stack.client.get(f"{path}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def settled(stack: Stack, path: str, n: int = 1) -> list[dict[str, Any]]:
    """The deliveries once `n` of them are no longer pending."""

    def done() -> list[dict[str, Any]] | None:
        items = deliveries(stack, path)
        return items if len([d for d in items if d["status"] != "pending"]) >= n else None

    return wait_for(done, 90, interval=0.2, what=f"{path}'s deliveries to settle")


def test_the_event_is_signed_with_the_owners_secret(hooks: Stack, receiver: Receiver) -> None:
    exp = hooks.submit(spec({"url": receiver.url}))
    finished = hooks.wait_terminal(exp["id"], timeout=120)
    (headers, body), *_ = receiver.wait(1)
    secret = hooks.client.get("/webhooks/secret").json()["secret"]
    assert verify_signature(secret, headers["x-labtrain-signature"], body)
    assert not verify_signature(secret, headers["x-labtrain-signature"], body.replace(b"succeeded", b"failed"))
    assert not verify_signature("whsec_another", headers["x-labtrain-signature"], body)
    event = json.loads(body)
    assert event["event"] == event["status"] == finished["status"] == "succeeded"
    assert event["experiment_id"] == exp["id"]
    assert event["metrics"] == finished["metrics"]["served"]
    assert event["metrics"]["val_accuracy"] is not None
    assert event["timestamp"].endswith("+00:00")
    [delivery] = settled(hooks, f"/experiments/{exp['id']}")
    assert delivery["id"] == event["id"] == headers["x-labtrain-delivery"]
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [200]
    assert hooks.client.get("/experiments/nope/deliveries").status_code == 404


def test_a_5xx_is_tried_again_and_every_try_recorded(hooks: Stack) -> None:
    receiver = Receiver([500])
    try:
        exp = hooks.submit(spec({"url": receiver.url}))
        first, second = receiver.wait(2)
        assert first[1] == second[1]  # the same event, signed again
        secret = hooks.client.get("/webhooks/secret").json()["secret"]
        assert verify_signature(secret, second[0]["x-labtrain-signature"], second[1])
        [delivery] = settled(hooks, f"/experiments/{exp['id']}")
        assert delivery["status"] == "delivered"
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
        assert [a["number"] for a in delivery["attempts"]] == [1, 2]
    finally:
        receiver.close()


def test_a_4xx_is_not_tried_again(hooks: Stack) -> None:
    receiver = Receiver([410])
    try:
        exp = hooks.submit(spec({"url": receiver.url, "events": ["succeeded", "failed"]}))
        [delivery] = settled(hooks, f"/experiments/{exp['id']}")
        assert delivery["status"] == "failed"
        assert [a["status_code"] for a in delivery["attempts"]] == [410]
        time.sleep(2)  # four backoffs of 0.5 s would have passed
        assert len(receiver.requests) == 1
    finally:
        receiver.close()


def test_an_event_not_asked_for_sends_nothing(hooks: Stack, receiver: Receiver) -> None:
    exp = hooks.submit(spec({"url": receiver.url, "events": ["failed"]}))
    hooks.wait_terminal(exp["id"], timeout=120)
    assert deliveries(hooks, f"/experiments/{exp['id']}") == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://169.254.169.254:80/", "link-local"),
        ("http://[fe80::1]:8080/hook", "link-local"),
        ("http://metadata.google.internal/", "metadata"),
        ("http://user:secret@127.0.0.1:9/hook", "credentials"),
        ("ftp://127.0.0.1:21/hook", "http or https"),
        ("http://10.1.2.3/hook", "not an allowed webhook destination"),
        ("http://127.0.0.1:9/hook with space", "control character"),
    ],
)
def test_refused_destinations_are_422_naming_notify_url(hooks: Stack, url: str, reason: str) -> None:
    response = hooks.client.post("/experiments", json=spec({"url": url}))
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "notify", "url"]
    assert reason in error["msg"]


def test_without_the_allow_setting_notify_is_refused_saying_how_to_allow(hooks: Stack, tmp_path: Path) -> None:
    with api_process(hooks, {"LABTRAIN_WEBHOOK_ALLOW": ""}, tmp_path / "api.log", {}) as client:
        response = client.post("/experiments", json=spec({"url": "http://127.0.0.1:9/hook"}))
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["loc"] == ["body", "notify", "url"]
        assert "LABTRAIN_WEBHOOK_ALLOW" in error["msg"]
        sweep = {"base": spec(None), "grid": {"seed": [0, 1]}, "notify": {"url": "http://127.0.0.1:9/hook"}}
        response = client.post("/sweeps", json=sweep)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["body", "notify", "url"]
        assert client.post("/experiments", json=spec(None)).status_code == 202  # no notify: as before


def test_a_sweep_sends_finished_once_when_its_last_member_ends(hooks: Stack, receiver: Receiver) -> None:
    body = {
        "name": "hooked-sweep",
        "base": spec(None),
        "grid": {"optimizer.lr": [0.01, 0.02, 0.05]},
        "notify": {"url": receiver.url},
    }
    response = hooks.client.post("/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep = response.json()
    [delivery] = settled(hooks, f"/sweeps/{sweep['id']}")
    (_, raw), *_ = receiver.wait(1)
    event = json.loads(raw)
    assert event == {**event, "event": "finished", "sweep_id": sweep["id"], "status": "finished"}
    assert event["counts"] == {"succeeded": 3}
    assert delivery["status"] == "delivered"
    assert delivery["id"] == event["id"]
    for experiment_id in sweep["experiment_ids"]:  # every member had ended when it was sent
        assert hooks.experiment(experiment_id)["status"] == "succeeded"
    time.sleep(2)
    assert len(receiver.requests) == 1


def test_a_redelivered_task_delivers_nothing_twice(hooks: Stack, receiver: Receiver) -> None:
    exp = hooks.submit(spec({"url": receiver.url}))
    [delivery] = settled(hooks, f"/experiments/{exp['id']}")
    assert delivery["status"] == "delivered"
    celery = build_celery(Settings(redis_url=hooks.redis_url))
    try:
        for _ in range(2):  # the same message again, as Redis redelivers one whose ack was lost
            celery.send_task("labtrain.deliver_webhook", args=[delivery["id"]], queue="cpu")
    finally:
        celery.close()
    line = f"webhook delivery {delivery['id']}: not pending"
    wait_for(lambda: hooks.all_worker_logs().count(line) >= 2, 60, interval=0.2, what="both duplicates skipped")
    assert len(receiver.requests) == 1
    [again] = deliveries(hooks, f"/experiments/{exp['id']}")
    assert len(again["attempts"]) == 1


def test_cancelling_a_queued_experiment_sends_its_event(hooks: Stack, receiver: Receiver) -> None:
    blocker = hooks.submit(spec(None, epochs=3000, name="blocker"))  # the one worker is busy with it
    wait_for(lambda: hooks.experiment(blocker["id"])["status"] == "running", 60, what="the blocker to run")
    exp = hooks.submit(spec({"url": receiver.url, "events": ["cancelled"]}))
    assert hooks.client.post(f"/experiments/{exp['id']}/cancel").status_code == 202
    hooks.client.post(f"/experiments/{blocker['id']}/cancel")
    (_, raw), *_ = receiver.wait(1)
    assert json.loads(raw)["status"] == "cancelled"
    assert json.loads(raw)["experiment_id"] == exp["id"]
    hooks.wait_terminal(blocker["id"], timeout=120)


def test_a_cancelled_sweep_sends_finished_with_status_cancelled(hooks: Stack, receiver: Receiver) -> None:
    blocker = hooks.submit(spec(None, epochs=3000, name="blocker"))  # the members stay queued behind it
    wait_for(lambda: hooks.experiment(blocker["id"])["status"] == "running", 60, what="the blocker to run")
    body = {"base": spec(None), "grid": {"seed": [0, 1]}, "notify": {"url": receiver.url}}
    sweep = hooks.client.post("/sweeps", json=body).json()
    assert hooks.client.post(f"/sweeps/{sweep['id']}/cancel").status_code == 202
    hooks.client.post(f"/experiments/{blocker['id']}/cancel")
    (_, raw), *_ = receiver.wait(1)
    event = json.loads(raw)
    assert event["sweep_id"] == sweep["id"]
    assert event["status"] == "cancelled"
    assert event["counts"] == {"cancelled": 2}
    hooks.wait_terminal(blocker["id"], timeout=120)


def test_a_lost_message_is_sent_again_by_the_reconciler(hooks: Stack, receiver: Receiver) -> None:
    blocker = hooks.submit(spec(None, epochs=3000, name="blocker"))  # the one worker is busy with it
    wait_for(lambda: hooks.experiment(blocker["id"])["status"] == "running", 60, what="the blocker to run")
    exp = hooks.submit(spec({"url": receiver.url, "events": ["cancelled"]}))
    assert hooks.client.post(f"/experiments/{exp['id']}/cancel").status_code == 202
    [delivery] = deliveries(hooks, f"/experiments/{exp['id']}")
    client = redis.Redis.from_url(hooks.redis_url)
    try:
        wait_for(lambda: client.llen("cpu") >= 2, 30, interval=0.1, what="the messages to wait in the queue")
        client.delete("cpu")  # Redis lost them: the experiment's (cancelled) and the delivery's
    finally:
        client.close()
    hooks.client.post(f"/experiments/{blocker['id']}/cancel")
    (_, raw), *_ = receiver.wait(1)
    assert json.loads(raw)["id"] == delivery["id"]
    resent = re.search(
        rf"re-sent \d+ webhook deliveries whose message was lost: .*{delivery['id']}", hooks.all_worker_logs()
    )
    assert resent is not None
    hooks.wait_terminal(blocker["id"], timeout=120)


def test_each_owner_has_a_secret_and_sees_only_their_deliveries(hooks: Stack, tmp_path: Path) -> None:
    first = hooks.client.get("/webhooks/secret").json()
    assert first == hooks.client.get("/webhooks/secret").json()  # stored, not made again
    assert first["owner"] == "default"
    assert first["secret"].startswith("whsec_")
    keys = {"LABTRAIN_API_KEYS": "alice:key-a,bob:key-b"}
    with api_process(hooks, keys, tmp_path / "a.log", {"X-API-Key": "key-a"}) as alice:
        with api_process(hooks, keys, tmp_path / "b.log", {"X-API-Key": "key-b"}) as bob:
            secrets = {c.get("/webhooks/secret").json()["secret"] for c in (alice, bob)}
            assert len(secrets) == 2
            assert first["secret"] not in secrets
            response = alice.post("/experiments", json=spec({"url": "http://127.0.0.1:9/hook"}, name="alices"))
            assert response.status_code == 202, response.text
            experiment_id = response.json()["id"]
            assert alice.get(f"/experiments/{experiment_id}/deliveries").status_code == 200
            assert bob.get(f"/experiments/{experiment_id}/deliveries").status_code == 404


# -- the checks a worker makes again before every POST (no stack needed) -------------------------


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254", "fd00:ec2::254", "100.100.100.200"]
)
def test_link_local_and_metadata_addresses_are_never_destinations(address: str) -> None:
    assert forbidden_address(address) is not None


def test_loopback_and_ordinary_addresses_may_be_allowed() -> None:
    assert forbidden_address("127.0.0.1") is None
    assert forbidden_address("::1") is None
    assert forbidden_address("93.184.216.34") is None


def test_patterns_match_host_and_port() -> None:
    [loop, named, wild] = parse_allow(" 127.0.0.1:* , hooks.example.org,*.lab.org:8443")
    assert loop.matches("127.0.0.1", 9, "http")
    assert named.matches("hooks.example.org", 443, "https")
    assert not named.matches("hooks.example.org", 8080, "http")  # no port given: the default one only
    assert wild.matches("a.lab.org", 8443, "https")
    assert not wild.matches("lab.org.evil.com", 8443, "https")


def test_a_send_to_a_link_local_address_is_refused_at_send_time_and_not_retried() -> None:
    settings = Settings(webhook_allow="*:*")  # even when everything is allowed
    outcome = post("http://169.254.169.254/latest/meta-data", b"{}", {}, settings)
    assert outcome.status_code is None
    assert outcome.error is not None
    assert "link-local" in outcome.error
    assert not outcome.retryable
    outcome = post("http://localhost:9/hook", b"{}", {}, Settings(webhook_allow="localhost:*"))
    assert outcome.error is not None
    assert "link-local" not in outcome.error  # resolved to loopback, allowed: the connection is refused
    assert outcome.retryable
