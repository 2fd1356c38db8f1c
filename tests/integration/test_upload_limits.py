"""Uploads cost bounded time and memory, through the real API on SQLite and PostgreSQL: a CSV's
columns and cells are refused (413, naming the setting) before its body is parsed; an NPZ's
arrays are sized from their headers and checked a block at a time (the API's peak memory stays
low for a decompression bomb); names and headers with control characters are a 422, never a
database error; errors echo a short excerpt; and heavy uploads parsed concurrently never stall
reads, since they parse outside the database-session slots."""

from __future__ import annotations

import io
import secrets
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import psutil
import pytest

from tests.conftest import Stack, api_process
from tests.integration.test_datasets import csv_bytes, npz_bytes, upload

pytestmark = pytest.mark.integration

MIB = 1 << 20


# -- the API process's memory ------------------------------------------------------------------


def api_pid(client: httpx.Client) -> int:
    """The process listening on the client's port (the API: uvicorn runs in one process)."""
    port = client.base_url.port
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return conn.pid
    raise AssertionError(f"no process listens on port {port}")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> int:
    """Reset the process's peak resident memory (VmHWM) to its current; returns the current, bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_kib(pid, "VmRSS") * 1024


def peak(pid: int) -> int:
    """The process's peak resident memory since the last reset, bytes."""
    return _status_kib(pid, "VmHWM") * 1024


# -- helpers ---------------------------------------------------------------------------------------


def wide_csv(columns: int, rows: int) -> bytes:
    header = ",".join(f"f{i}" for i in range(columns - 1)) + ",label"
    body = "".join(",".join(["0.5"] * (columns - 1)) + f",{r % 2}\n" for r in range(rows))
    return (header + "\n" + body).encode()


def uploads_named(client: httpx.Client, name: str) -> list[dict[str, Any]]:
    return [d for d in client.get("/datasets").json()["items"] if d["name"] == name]


def refused(response: httpx.Response, status: int, error: str, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    assert len(response.content) < 4000  # a bounded excerpt, whatever was sent
    return body


def npy_member(header: dict[str, Any], payload: bytes) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + payload


def zipped(**members: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(f"{name}.npy", content)
    return out.getvalue()


def zeros_bomb(rows: int, columns: int) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, x=np.zeros((rows, columns), dtype=np.float32), y=np.arange(rows) % 2)
    return out.getvalue()


# -- CSV -------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_csv_wider_than_the_limit_is_refused_from_its_header(stack: Stack) -> None:
    name = f"wide-{secrets.token_hex(3)}"
    response = upload(stack.client, wide_csv(40_000, 12), "wide.csv", target="label", name=name)
    body = refused(response, 413, "UploadTooLarge", "40,000 columns", "10,000", "LABTRAIN_MAX_UPLOAD_COLUMNS")
    assert body["limit"] == "LABTRAIN_MAX_UPLOAD_COLUMNS"
    assert uploads_named(stack.client, name) == []
    # The widest legal file is parsed and stored.
    legal = upload(stack.client, wide_csv(10_000, 12), "legal.csv", target="label", name=f"legal-{name}")
    assert legal.status_code == 201, legal.text
    assert legal.json()["input_shape"] == [9_999]


@pytest.fixture
def small_cells(stack: Stack, tmp_path: Path) -> Iterator[httpx.Client]:
    env = {"LABTRAIN_MAX_UPLOAD_CELLS": "1000", "LABTRAIN_MAX_UPLOAD_INFLATED_BYTES": str(MIB)}
    with api_process(stack, env, tmp_path / "api.log", {}) as client:
        yield client


@pytest.mark.timeout(60)
def test_cells_and_inflated_bytes_above_their_settings_are_refused(small_cells: httpx.Client) -> None:
    name = f"tall-{secrets.token_hex(3)}"
    response = upload(small_cells, csv_bytes(n=400), "tall.csv", target="label", name=name)
    refused(response, 413, "UploadTooLarge", "400 rows × 3 columns = 1,200 cells", "LABTRAIN_MAX_UPLOAD_CELLS")
    assert upload(small_cells, csv_bytes(n=300), "ok.csv", target="label", name=name).status_code == 201
    bomb = upload(small_cells, zeros_bomb(2_000, 200), "bomb.npz", name=f"bomb-{name}")
    refused(bomb, 413, "UploadTooLarge", "1,616,000 bytes once decompressed", "LABTRAIN_MAX_UPLOAD_INFLATED_BYTES")
    assert uploads_named(small_cells, f"bomb-{name}") == []


BAD_TEXT = [
    ("nul-in-header", b"width,hei\x00ght,label\n" + b"1,2,0\n2,1,1\n" * 10, {}, "control character (U+0000)"),
    ("escape-in-header", b"width,hei\x1bght,label\n" + b"1,2,0\n2,1,1\n" * 10, {}, "control character (U+001B)"),
    ("nul-in-class", b"width,height,label\n" + b"1,2,a\x00\n2,1,b\n" * 10, {}, "control character (U+0000)"),
    ("long-header", b"width," + b"h" * 5000 + b",label\n" + b"1,2,0\n2,1,1\n" * 10, {}, "longer than 200"),
    ("nul-in-name", csv_bytes(), {"name": "wine\x00"}, "control character (U+0000)"),
    ("newline-in-name", csv_bytes(), {"name": "wi\nne"}, "control character (U+000A)"),
]  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("content", "fields", "needle"), [c[1:] for c in BAD_TEXT], ids=[c[0] for c in BAD_TEXT])
def test_control_characters_in_names_and_headers_are_a_422(
    stack: Stack, content: bytes, fields: dict[str, str], needle: str
) -> None:
    fields = {"name": f"ctl-{secrets.token_hex(3)}"} | fields
    response = upload(stack.client, content, "data.csv", target="label", **fields)
    body = refused(response, 422, "ValidationError", needle)
    assert body["errors"][0]["loc"][0] == "body"
    assert stack.client.get("/datasets").status_code == 200


@pytest.mark.timeout(60)
def test_errors_echo_an_excerpt_of_a_huge_cell_or_field(stack: Stack) -> None:
    cell = "z" * 100_000
    content = b"width,height,label\n" + f"1,{cell},0\n".encode() + b"1,2,0\n2,1,1\n" * 10
    refused(upload(stack.client, content, "data.csv", target="label"), 422, "ValidationError", "100,000 characters")
    huge = b"width,height,label\n" + b"1," + b"9" * 5_000_000 + b",0\n" + b"1,2,0\n2,1,1\n" * 10
    refused(upload(stack.client, huge, "data.csv", target="label"), 422, "ValidationError", "not a readable CSV")
    refused(upload(stack.client, csv_bytes(), "data.csv", target="x" * 900), 422, "ValidationError", "no target")


@pytest.mark.timeout(60)
def test_a_builtins_name_is_taken(stack: Stack) -> None:
    response = upload(stack.client, csv_bytes(), "spirals.csv", target="label")  # the name from the file
    refused(response, 409, "DatasetNameTaken", "'spirals' is a built-in")


# -- NPZ -------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_npz_headers_are_read_before_anything_is_inflated(stack: Stack) -> None:
    # 36 TiB declared in a 300-byte archive: refused from the header (it was a MemoryError 500).
    x = npy_member({"descr": "<f4", "fortran_order": False, "shape": (10_000_000, 1_000_000)}, b"\0" * 64)
    y = npy_member({"descr": "<i8", "fortran_order": False, "shape": (10_000_000,)}, b"\0" * 64)
    body = refused(upload(stack.client, zipped(x=x, y=y), "huge.npz"), 413, "UploadTooLarge",
                   "40,000,080,000,000 bytes", "LABTRAIN_MAX_UPLOAD_INFLATED_BYTES")  # fmt: skip
    assert body["limit"] == "LABTRAIN_MAX_UPLOAD_INFLATED_BYTES"

    whole = npz_bytes(x=np.random.default_rng(0).random((50, 4)), y=np.arange(50) % 2)
    refused(upload(stack.client, whole[: len(whole) // 2], "cut.npz"), 422, "ValidationError", "truncated or malformed")
    short = npy_member({"descr": "<f8", "fortran_order": False, "shape": (50, 4)}, b"\0" * 64)
    labels = npy_member({"descr": "<i8", "fortran_order": False, "shape": (50,)}, (np.arange(50) % 2).tobytes())
    refused(upload(stack.client, zipped(x=short, y=labels), "short.npz"), 422, "ValidationError",
            "array 'x' is truncated or malformed")  # fmt: skip
    objects = npy_member({"descr": "|O", "fortran_order": False, "shape": (50, 4)}, b"\0" * 64)
    refused(upload(stack.client, zipped(x=objects, y=labels), "obj.npz"), 422, "ValidationError",
            "array 'x' has dtype object")  # fmt: skip


@pytest.fixture
def fresh_api(stack: Stack, tmp_path: Path) -> Iterator[httpx.Client]:
    """An API process of its own, so that its memory is this test's alone."""
    with api_process(stack, {}, tmp_path / "api.log", {}) as client:
        yield client


@pytest.mark.timeout(120)
def test_a_decompression_bomb_is_checked_in_little_memory(fresh_api: httpx.Client) -> None:
    pid = api_pid(fresh_api)
    warm = upload(fresh_api, npz_bytes(x=np.zeros((20, 3)), y=np.arange(20) % 2), "warm.npz",
                  name=f"warm-{secrets.token_hex(3)}")  # fmt: skip
    assert warm.status_code == 201, warm.text  # numpy and the upload path loaded
    bomb = zeros_bomb(60_000, 2_000)  # 480 MB of float32 zeros in ~470 KB: within the 1 GiB limit
    assert len(bomb) < 1_000_000
    before = reset_peak(pid)
    response = upload(fresh_api, bomb, "bomb.npz", name=f"bomb-{secrets.token_hex(3)}")
    assert response.status_code == 201, response.text
    assert response.json()["input_shape"] == [2_000]
    grew = peak(pid) - before
    assert grew < 150 * MIB, f"the API's peak memory grew {grew / MIB:.0f} MiB checking a 480 MB bomb"


# -- concurrency -------------------------------------------------------------------------------------


@pytest.fixture
def two_parses(stack: Stack, tmp_path: Path) -> Iterator[httpx.Client]:
    with api_process(stack, {"LABTRAIN_UPLOAD_PARSE_CONCURRENCY": "2"}, tmp_path / "api.log", {}) as client:
        yield client


@pytest.mark.timeout(300)
def test_heavy_uploads_parsed_at_once_never_stall_reads(two_parses: httpx.Client) -> None:
    # 2,000,000 cells, ~8 MB: long enough to parse, on a quiet machine too, that the reads below
    # run while parses are in flight (60 rows parsed in a fraction of a second: 4 reads in all).
    content = wide_csv(10_000, 200)
    base = two_parses.base_url
    results: list[int] = []

    def send(i: int) -> None:
        name = f"heavy-{i}-{secrets.token_hex(3)}"
        with httpx.Client(base_url=base, timeout=240) as client:
            results.append(upload(client, content, "heavy.csv", target="label", name=name).status_code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    reads: list[float] = []
    while any(t.is_alive() for t in threads):
        started = time.monotonic()
        assert two_parses.get("/experiments", params={"limit": 5}).status_code == 200
        reads.append(time.monotonic() - started)
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert results == [201] * 8
    assert len(reads) >= 5, reads
    assert max(reads) < 5.0, f"a read took {max(reads):.1f} s while 8 uploads parsed; reads: {sorted(reads)[-5:]}"


@pytest.mark.timeout(60)
def test_a_name_or_id_with_a_control_character_names_no_upload(stack: Stack) -> None:
    for key in ("wine\x00", "a\x00b", "tab\there"):
        path = f"/datasets/{quote(key, safe='')}"  # %00, %09: refused as a path (422) or found nowhere (404)
        assert stack.client.get(path).status_code in (404, 422)
        assert stack.client.delete(path).status_code in (404, 422)
        for field in ("name", "id"):
            spec = {"dataset": {field: key}, "epochs": 1, "device": "cuda"}
            response = stack.client.post("/experiments", json=spec)
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0]["loc"] == ["body", "dataset", field]
