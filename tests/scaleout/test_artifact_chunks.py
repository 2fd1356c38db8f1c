"""Artifacts without a shared directory: a blob above the inline limit is stored in the database
in chunks of CHUNK_BYTES, written and read a few chunks at a time, checked against its size and
sha256, replaced and rolled back whole. A real SQLite file and a real PostgreSQL database (these
need no network namespace: the round trip between hosts is in test_hosts.py)."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update

from core.artifact_store import CHUNK_BYTES, ArtifactStore, ArtifactUnavailable
from core.db import create_db_engine, session_factory, upgrade_database
from core.repositories import artifacts as repo
from core.repositories import experiments as experiments_repo
from core.tables import Artifact, ArtifactChunk
from tests.conftest import fresh_database

STORE = ArtifactStore(None, inline_max_bytes=1024)  # no directory: what a worker host has


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with fresh_database(request.param, tmp_path) as url:
        upgrade_database(url)
        engine = create_db_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def experiment_id(engine: Engine) -> str:
    with session_factory(engine).begin() as session:
        return experiments_repo.create(
            session, owner="default", name="e", spec={}, task="binary", param_count=1, queue="cpu"
        ).id


def put(engine: Engine, experiment_id: str, blob: bytes, kind: str = "model") -> None:
    with session_factory(engine).begin() as session:
        STORE.put(session, experiment_id, kind, blob, epoch=1)


def described(engine: Engine, experiment_id: str, kind: str = "model") -> Artifact:
    with session_factory(engine)() as session:
        row = repo.describe(session, experiment_id, kind)
        assert row is not None
        return row


def read(engine: Engine, experiment_id: str, kind: str = "model") -> bytes:
    with session_factory(engine)() as session:
        return STORE.read(session, described(engine, experiment_id, kind))


def chunk_sizes(engine: Engine) -> list[int]:
    """The size of every stored chunk of every artifact, in (artifact, seq) order."""
    with session_factory(engine)() as session:
        stmt = select(func.length(ArtifactChunk.data)).order_by(ArtifactChunk.artifact_id, ArtifactChunk.seq)
        return list(session.scalars(stmt))


def test_a_blob_above_the_inline_limit_is_stored_in_chunks_and_read_back(engine: Engine, experiment_id: str) -> None:
    blob = os.urandom(2 * CHUNK_BYTES + 12_345)
    put(engine, experiment_id, blob)
    stored = described(engine, experiment_id)
    assert (stored.location, stored.size, stored.sha256) == (None, len(blob), hashlib.sha256(blob).hexdigest())
    assert chunk_sizes(engine) == [CHUNK_BYTES, CHUNK_BYTES, 12_345]
    assert read(engine, experiment_id) == blob
    with session_factory(engine)() as session:
        pieces = list(STORE.iter_blob(session, stored))
    assert [len(p) for p in pieces] == [CHUNK_BYTES, CHUNK_BYTES, 12_345]
    assert b"".join(pieces) == blob

    put(engine, experiment_id, b"small", kind="checkpoint")  # at most the inline limit: in the row
    assert read(engine, experiment_id, "checkpoint") == b"small"
    assert len(chunk_sizes(engine)) == 3


def test_a_replaced_or_removed_blob_leaves_no_chunk_behind(engine: Engine, experiment_id: str) -> None:
    put(engine, experiment_id, os.urandom(3 * CHUNK_BYTES), kind="checkpoint")
    second = os.urandom(CHUNK_BYTES + 1)
    put(engine, experiment_id, second, kind="checkpoint")
    assert chunk_sizes(engine) == [CHUNK_BYTES, 1]
    assert read(engine, experiment_id, "checkpoint") == second
    with session_factory(engine).begin() as session:
        STORE.remove(session, experiment_id, "checkpoint")
    assert chunk_sizes(engine) == []


def test_a_rolled_back_write_keeps_the_previous_blob(engine: Engine, experiment_id: str) -> None:
    kept = os.urandom(CHUNK_BYTES + 10)
    put(engine, experiment_id, kept)
    with session_factory(engine)() as session:
        STORE.put(session, experiment_id, "model", os.urandom(4 * CHUNK_BYTES), epoch=2)
        session.rollback()
    assert read(engine, experiment_id) == kept
    assert chunk_sizes(engine) == [CHUNK_BYTES, 10]


def test_a_damaged_or_vanished_chunk_is_never_handed_out_as_the_blob(engine: Engine, experiment_id: str) -> None:
    blob = os.urandom(3 * CHUNK_BYTES)
    put(engine, experiment_id, blob)
    stored = described(engine, experiment_id)
    with session_factory(engine).begin() as session:
        session.execute(
            update(ArtifactChunk)
            .where(ArtifactChunk.artifact_id == stored.id, ArtifactChunk.seq == 1)
            .values(data=b"\0" * CHUNK_BYTES)
        )
    with pytest.raises(ArtifactUnavailable, match="does not match its recorded sha256"):
        read(engine, experiment_id)
    handed_out: list[bytes] = []

    def stream() -> None:
        with session_factory(engine)() as session:
            handed_out.extend(STORE.iter_blob(session, stored))

    with pytest.raises(ArtifactUnavailable, match="sha256"):
        stream()
    assert len(handed_out) == 2  # a stream of a bad blob breaks before its end

    put(engine, experiment_id, os.urandom(10 * CHUNK_BYTES))
    with session_factory(engine)() as session:  # replaced while being streamed: its chunks go with its row
        pieces = STORE.iter_blob(session, described(engine, experiment_id))
        next(pieces)  # the first CHUNK_BATCH chunks are read
        put(engine, experiment_id, b"r" * (CHUNK_BYTES * 2))
        with pytest.raises(ArtifactUnavailable, match="gone"):
            list(pieces)


def test_streaming_a_large_blob_in_and_out_holds_a_few_chunks_of_it(engine: Engine, experiment_id: str) -> None:
    """32 MiB written from a stream of 64 KiB pieces and read back as a stream: the Python heap
    never holds more than a few chunks of it (6 written, 8 read: CHUNK_BATCH and their copies)."""
    total, piece = 32 * CHUNK_BYTES, 64 * 1024
    expected = hashlib.sha256()

    def source() -> Iterator[bytes]:
        for i in range(total // piece):
            data = i.to_bytes(4, "little") * (piece // 4)
            expected.update(data)
            yield data

    tracemalloc.start()
    try:
        with session_factory(engine).begin() as session:
            assert STORE.put_chunks(session, experiment_id, "checkpoint", source()) == total
        _, peak_in = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        got = hashlib.sha256()
        with session_factory(engine)() as session:
            for chunk in STORE.iter_blob(session, described(engine, experiment_id, "checkpoint")):
                got.update(chunk)
        _, peak_out = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.hexdigest() == expected.hexdigest() == described(engine, experiment_id, "checkpoint").sha256
    assert peak_in < 6 * CHUNK_BYTES, peak_in
    assert peak_out < 8 * CHUNK_BYTES, peak_out
