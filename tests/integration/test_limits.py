"""Every limit is a setting with a clear refusal naming it and its LABTRAIN_ variable, and a
refused request stores nothing: parameter count, total work, upload size (refused while the
body streams in), and experiments queued per owner (a sweep counts all its members)."""

from __future__ import annotations

import secrets
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, api_process
from tests.integration.test_experiments import tiny_spec

pytestmark = pytest.mark.integration

LIMITS = {
    "LABTRAIN_MAX_PARAMS": "1000",
    "LABTRAIN_MAX_TOTAL_WORK": "1000000",
    "LABTRAIN_MAX_UPLOAD_BYTES": "4096",
    "LABTRAIN_MAX_QUEUED_PER_OWNER": "3",
}


@pytest.fixture
def limited(stack: Stack, tmp_path: Path) -> Iterator[httpx.Client]:
    """An API with small limits, for an owner of its own (so only its own queue counts)."""
    owner, key = f"limits-{secrets.token_hex(3)}", secrets.token_hex(8)
    env = LIMITS | {"LABTRAIN_API_KEYS": f"{owner}:{key}"}
    with api_process(stack, env, tmp_path / "api.log", {"X-API-Key": key}) as client:
        yield client


def parked(name: str) -> dict[str, Any]:
    """A spec within the limits for the gpu queue, which no test worker serves: it stays queued."""
    return tiny_spec(name, epochs=5, device="cuda")


def nothing_stored(client: httpx.Client) -> None:
    assert client.get("/experiments").json()["items"] == []
    assert client.get("/sweeps").json()["items"] == []
    assert [d for d in client.get("/datasets").json()["items"] if d["kind"] == "upload"] == []


def refusal(response: httpx.Response, status: int, error: str, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    return body


@pytest.mark.timeout(90)
def test_parameter_count_and_total_work_are_refused_naming_their_settings(limited: httpx.Client) -> None:
    wide = tiny_spec("wide", model={"type": "mlp", "hidden_layers": 2, "neurons": 64})  # 4,417 parameters
    refusal(limited.post("/experiments", json=wide), 422, "ValidationError", "4,417", "1,000", "LABTRAIN_MAX_PARAMS")

    # spirals, 1000 samples: 600 train; 2→8→8→1 is 105 parameters; 20 epochs = 1,260,000 > 1,000,000.
    long = tiny_spec("long", epochs=20)
    body = refusal(
        limited.post("/experiments", json=long), 422, "ValidationError",
        "20 epochs × 600 training samples × 105 parameters", "LABTRAIN_MAX_TOTAL_WORK",
    )  # fmt: skip
    assert body["errors"][0]["type"] == "too_much_work"

    sweep = {"name": "too-much", "base": tiny_spec("base", epochs=5), "variants": [{"name": "ok"},
             {"name": "long", "epochs": 20}, {"name": "wide", "model.neurons": 64}]}  # fmt: skip
    body = refusal(limited.post("/sweeps", json=sweep), 422, "ValidationError", "LABTRAIN_MAX_PARAMS")
    assert any("row 'wide'" in e["msg"] and "LABTRAIN_MAX_PARAMS" in e["msg"] for e in body["errors"])
    del sweep["variants"][2]
    body = refusal(limited.post("/sweeps", json=sweep), 422, "ValidationError", "row 'long'", "LABTRAIN_MAX_TOTAL_WORK")
    assert body["errors"][0]["loc"] == ["body", "variants", 1]
    nothing_stored(limited)

    ok = limited.post("/experiments", json=tiny_spec("ok", epochs=15, device="cuda"))  # 945,000: within
    assert ok.status_code == 202, ok.text
    assert limited.post(f"/experiments/{ok.json()['id']}/cancel").status_code == 202


def _raw_request(client: httpx.Client, head: str, body_chunks: Iterator[bytes]) -> tuple[int, str, int]:
    """Send `head`, then body chunks until the server answers; (status, response text, body bytes sent)."""
    url = httpx.URL(str(client.base_url))
    sent = 0
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(head.encode())
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer came before the body was sent
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    status = int(data.split(b" ", 2)[1])
    return status, data.decode(errors="replace"), sent


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode().lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":", 1)[1])
    return 0


@pytest.mark.timeout(90)
def test_an_upload_too_large_is_refused_while_it_streams_in(limited: httpx.Client) -> None:
    rows = "".join(f"{i},{i % 7},{i % 2}\n" for i in range(1000))
    big = ("a,b,label\n" + rows).encode()
    assert len(big) > 4096
    response = limited.post("/datasets", files={"file": ("big.csv", big)}, data={"target": "label"})
    refusal(response, 413, "UploadTooLarge", "4,096 bytes", "LABTRAIN_MAX_UPLOAD_BYTES")

    key = limited.headers["X-API-Key"]
    boundary = "labtrainboundary"
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.csv"\r\n\r\na,b,label\r\n'
    ).encode()

    def body(total: int, chunked: bool) -> Iterator[bytes]:
        piece = b"1,2,0\n" * 10_000  # 60 kB
        chunks = [start, *[piece] * (total // len(piece))]
        for c in chunks:
            yield f"{len(c):x}\r\n".encode() + c + b"\r\n" if chunked else c

    # A 2 GB Content-Length is refused before a byte of the body is read.
    head = (
        f"POST /datasets HTTP/1.1\r\nHost: test\r\nX-API-Key: {key}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
    )
    status, text, sent = _raw_request(limited, head + "Content-Length: 2147483648\r\n\r\n", iter(()))
    assert (status, sent) == (413, 0), text
    assert "LABTRAIN_MAX_UPLOAD_BYTES" in text

    # A chunked body of unknown length is refused once it passes the limit, long before its end.
    status, text, sent = _raw_request(limited, head + "Transfer-Encoding: chunked\r\n\r\n", body(200_000_000, True))
    assert status == 413, text
    assert "LABTRAIN_MAX_UPLOAD_BYTES" in text
    assert sent < 20_000_000  # of 200 MB offered
    nothing_stored(limited)

    small = ("a,b,label\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(40))).encode()
    response = limited.post("/datasets", files={"file": ("small.csv", small)}, data={"target": "label"})
    assert response.status_code == 201, response.text
    assert limited.delete(f"/datasets/{response.json()['id']}").status_code == 204


@pytest.mark.timeout(90)
def test_queued_experiments_per_owner_are_limited_and_a_sweep_counts_whole(limited: httpx.Client) -> None:
    ids = []
    for i in range(3):
        response = limited.post("/experiments", json=parked(f"parked{i}"))  # gpu queue: stays queued
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    response = limited.post("/experiments", json=parked("one too many"))
    refusal(response, 429, "TooManyQueued", "3 experiments queued", "limit of 3", "LABTRAIN_MAX_QUEUED_PER_OWNER")
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["retry_after"] == int(response.headers["Retry-After"])

    assert limited.post(f"/experiments/{ids.pop()}/cancel").status_code == 202  # 2 queued: room for 1
    sweep = {"name": "two", "base": parked("base"), "variants": [{"name": "a"}, {"name": "b"}]}
    response = limited.post("/sweeps", json=sweep)
    refusal(response, 429, "TooManyQueued", "2 more experiments", "LABTRAIN_MAX_QUEUED_PER_OWNER")
    assert "Retry-After" in response.headers
    assert limited.get("/sweeps").json()["items"] == []
    assert len(limited.get("/experiments", params={"status": "queued"}).json()["items"]) == 2

    del sweep["variants"][1]
    response = limited.post("/sweeps", json=sweep)
    assert response.status_code == 202, response.text
    assert limited.post(f"/sweeps/{response.json()['id']}/cancel").status_code == 202
    for ident in ids:
        assert limited.post(f"/experiments/{ident}/cancel").status_code == 202
