"""Where artifacts live: small ones in the row, large ones as files under LABTRAIN_ARTIFACT_DIR
when it is set; replaced files deleted after the commit, files of a rolled-back write deleted,
and a blob that does not match its recorded sha256 never handed out. A real SQLite database."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.artifact_store import ArtifactStore, ArtifactUnavailable
from core.db import create_db_engine, session_factory, upgrade_database
from core.repositories import artifacts as repo
from core.repositories import experiments as experiments_repo
from core.tables import Artifact


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'labtrain.db'}"
    upgrade_database(url)
    engine = create_db_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def experiment_id(engine: Engine) -> str:
    with session_factory(engine).begin() as session:
        row = experiments_repo.create(
            session, owner="default", name="e", spec={}, task="binary", param_count=1, queue="cpu"
        )
        return row.id


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def put(engine: Engine, store: ArtifactStore, experiment_id: str, blob: bytes, kind: str = "model") -> None:
    with session_factory(engine).begin() as session:
        store.put(session, experiment_id, kind, blob, epoch=1)


def read(engine: Engine, store: ArtifactStore, experiment_id: str, kind: str = "model") -> bytes:
    with session_factory(engine)() as session:
        row = repo.describe(session, experiment_id, kind)
        assert row is not None
        return store.read(session, row)


def row(engine: Engine, experiment_id: str, kind: str = "model") -> Artifact:
    with session_factory(engine)() as session:
        found = session.scalars(select(Artifact).where(Artifact.experiment_id == experiment_id, Artifact.kind == kind))
        return found.one()


def test_without_a_directory_everything_is_in_the_row(engine: Engine, experiment_id: str) -> None:
    store = ArtifactStore(None, inline_max_bytes=0)
    blob = b"x" * 10_000
    put(engine, store, experiment_id, blob)
    stored = row(engine, experiment_id)
    assert stored.location is None
    assert stored.size == 10_000
    assert stored.sha256 == hashlib.sha256(blob).hexdigest()
    assert read(engine, store, experiment_id) == blob


def test_small_blobs_stay_in_the_row_large_ones_become_files(
    engine: Engine, experiment_id: str, directory: Path, tmp_path: Path
) -> None:
    store = ArtifactStore(directory, inline_max_bytes=100)
    put(engine, store, experiment_id, b"s" * 100, kind="checkpoint")
    assert row(engine, experiment_id, "checkpoint").location is None
    assert files(directory) == []

    blob = b"L" * 101
    put(engine, store, experiment_id, blob)
    stored = row(engine, experiment_id)
    assert stored.location is not None
    assert stored.location.startswith(f"{experiment_id}/model-")
    assert stored.size == 101
    assert files(directory) == [directory / stored.location]
    assert read(engine, store, experiment_id) == blob
    # Another host mounts the directory elsewhere: rows name files relative to it.
    moved = tmp_path / "mounted-elsewhere"
    directory.rename(moved)
    assert read(engine, ArtifactStore(moved, inline_max_bytes=100), experiment_id) == blob


def test_a_replaced_file_is_deleted_after_the_commit(engine: Engine, experiment_id: str, directory: Path) -> None:
    store = ArtifactStore(directory, inline_max_bytes=0)
    put(engine, store, experiment_id, b"first", kind="checkpoint")
    first = directory / row(engine, experiment_id, "checkpoint").location  # type: ignore[operator]
    with session_factory(engine).begin() as session:
        store.put(session, experiment_id, "checkpoint", b"second", epoch=2)
        assert first.exists()  # not yet committed: a reader may still use the first file
    second = directory / row(engine, experiment_id, "checkpoint").location  # type: ignore[operator]
    assert files(directory) == [second]
    assert second.read_bytes() == b"second"

    with session_factory(engine).begin() as session:
        store.remove(session, experiment_id, "checkpoint")
    assert files(directory) == []


def test_a_rolled_back_write_leaves_neither_row_nor_file(engine: Engine, experiment_id: str, directory: Path) -> None:
    store = ArtifactStore(directory, inline_max_bytes=0)
    put(engine, store, experiment_id, b"kept")
    kept = files(directory)
    session: Session = session_factory(engine)()
    try:
        store.put(session, experiment_id, "model", b"abandoned", epoch=2)
        assert len(files(directory)) == 2
        session.rollback()
    finally:
        session.close()
    assert files(directory) == kept
    assert read(engine, store, experiment_id) == b"kept"


def test_a_blob_that_does_not_match_its_digest_is_refused(engine: Engine, experiment_id: str, directory: Path) -> None:
    store = ArtifactStore(directory, inline_max_bytes=0)
    put(engine, store, experiment_id, b"weights")
    (path,) = files(directory)
    path.write_bytes(b"weightz")
    with pytest.raises(ArtifactUnavailable, match="does not match its recorded sha256"):
        read(engine, store, experiment_id)
    path.unlink()
    with pytest.raises(ArtifactUnavailable, match="does not exist"):
        read(engine, store, experiment_id)
    with pytest.raises(ArtifactUnavailable, match="LABTRAIN_ARTIFACT_DIR is not set"):
        read(engine, ArtifactStore(None, 0), experiment_id)
