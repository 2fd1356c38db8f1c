"""Many clients at once: the API neither stalls nor answers 5xx, and every accepted experiment is
stored. 120 requests in flight is three times anyio's 40 threads and more than the database
pool, the situation where handlers holding threads and sessions holding connections used to wait
on each other until the pool's 30 s timeout turned them into 500s."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.test_experiments import parked_spec

pytestmark = pytest.mark.integration

SUBMISSIONS = 80  # POSTs in flight at once
READERS = 40  # GETs in flight beside them


async def _burst(base_url: str, requests: list[tuple[str, str, dict[str, Any] | None]]) -> list[httpx.Response | str]:
    """Send every (method, path, json) at once on its own connection; a transport error is
    returned as its class name."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(base_url=base_url, timeout=90, limits=limits) as client:

        async def one(method: str, path: str, body: dict[str, Any] | None) -> httpx.Response | str:
            try:
                return await client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                return type(exc).__name__

        return await asyncio.gather(*(one(*r) for r in requests))


def _outcomes(responses: list[httpx.Response | str]) -> Counter[str]:
    return Counter(r if isinstance(r, str) else f"{r.request.method} {r.status_code}" for r in responses)


@pytest.mark.timeout(120)
def test_many_concurrent_submissions_and_reads_are_all_answered_and_stored(stack: Stack) -> None:
    # Parked on the gpu queue (no test worker serves it), so the burst measures the API alone.
    posts = [("POST", "/experiments", parked_spec(f"burst-{i}")) for i in range(SUBMISSIONS)]
    reads = [("GET", "/experiments?limit=20", None)] * READERS
    responses = asyncio.run(_burst(stack.base_url, posts + reads))
    assert _outcomes(responses) == {"POST 202": SUBMISSIONS, "GET 200": READERS}

    ids = [r.json()["id"] for r in responses[:SUBMISSIONS] if isinstance(r, httpx.Response)]
    assert len(set(ids)) == SUBMISSIONS
    stored = {exp_id: stack.experiment(exp_id) for exp_id in ids}
    assert {e["status"] for e in stored.values()} == {"queued"}
    assert sorted(e["name"] for e in stored.values()) == sorted(f"burst-{i}" for i in range(SUBMISSIONS))

    # The same with writes to existing rows: every one cancelled at once, read beside.
    cancels = [("POST", f"/experiments/{exp_id}/cancel", None) for exp_id in ids]
    reads = [("GET", f"/experiments/{ids[i % len(ids)]}", None) for i in range(READERS)]
    responses = asyncio.run(_burst(stack.base_url, cancels + reads))
    assert _outcomes(responses) == {"POST 202": SUBMISSIONS, "GET 200": READERS}
    assert {stack.experiment(exp_id)["status"] for exp_id in ids} == {"cancelled"}


@pytest.mark.timeout(120)
def test_slow_uploads_hold_no_database_slot(stack: Stack) -> None:
    """More uploads than the API's session slots (api/deps.py DB_SESSIONS), each stalled halfway
    through its body: reads still answer while every upload waits, and then every upload lands.
    (An upload read inside the session dependency would hold a slot for as long as it streams.)"""
    import threading

    from api.deps import DB_SESSIONS
    from tests.integration.test_datasets import csv_bytes

    uploads = DB_SESSIONS + 4
    release = threading.Event()
    halfway = threading.Semaphore(0)
    results: list[int | str] = []

    def body(name: str) -> Any:
        boundary = "labtrain-test-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="target"\r\n\r\nlabel\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n\r\n'
        ).encode() + csv_bytes()
        yield head[: len(head) // 2]
        halfway.release()
        release.wait(60)  # the rest of the body comes only when the test says so
        yield head[len(head) // 2 :] + f"\r\n--{boundary}--\r\n".encode()

    def upload(i: int) -> None:
        name = f"slow-{i}-{stack.port}"
        headers = {"Content-Type": "multipart/form-data; boundary=labtrain-test-boundary"}
        try:
            with httpx.Client(base_url=stack.base_url, timeout=90) as client:
                results.append(client.post("/datasets", content=body(name), headers=headers).status_code)
        except httpx.HTTPError as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(uploads)]
    for t in threads:
        t.start()
    try:
        for _ in range(uploads):
            assert halfway.acquire(timeout=30), "every upload has sent half of its body"
        # Every upload is now stalled mid-body. A read needs a session slot: it must answer now.
        with httpx.Client(base_url=stack.base_url, timeout=20) as client:
            assert client.get("/datasets").status_code == 200
            assert client.get("/experiments", params={"limit": 1}).status_code == 200
    finally:
        release.set()
        for t in threads:
            t.join(timeout=60)
    assert results == [201] * uploads
