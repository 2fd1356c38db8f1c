"""Where artifact blobs live: in the database, in the row (every blob up to
LABTRAIN_ARTIFACT_INLINE_MAX_BYTES) or in pieces of CHUNK_BYTES (`artifact_chunks`, larger ones),
or as a file under LABTRAIN_ARTIFACT_DIR when that is set and the blob is larger than the inline
limit. API and worker hosts share only the database (and this directory, mounted anywhere: rows
name files relative to it), so a row says where its blob is; without the directory a worker host
needs nothing but the database to read and write every model and checkpoint.

Chunks are written one at a time (each its own INSERT, the blob never copied whole) and read
CHUNK_BATCH at a time, so streaming a blob (`iter_blob`, the model download) holds at most a
few MiB of it, whatever its size. Files are written before their row (to a temporary name, then
renamed, so a reader never sees a partial file) under a name used once, and never rewritten. The
files a write replaces are deleted after the transaction commits; a file written by a transaction
that rolls back is deleted then; chunks go with their row (the foreign key cascades). Every read
checks the blob against the row's size and sha256: a wrong, damaged or half-replaced blob is
refused, never loaded (a stream raises before its end).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from core.repositories import artifacts as repo
from core.settings import Settings
from core.tables import Artifact

log = logging.getLogger("labtrain.artifacts")

CHUNK_BYTES = 1 << 20  # one artifact_chunks row: small enough to hold a few, large enough to need few rows
CHUNK_BATCH = 2  # chunks fetched per statement when reading


class ArtifactUnavailable(RuntimeError):
    """The blob a row names cannot be read here (no directory configured, file missing, digest wrong)."""


class ArtifactStore:
    def __init__(self, directory: Path | None, inline_max_bytes: int) -> None:
        self.directory = directory
        self.inline_max_bytes = inline_max_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(settings.artifact_dir, settings.artifact_inline_max_bytes)

    # -- writes (inside the caller's transaction) -------------------------------------------

    def put(self, session: Session, experiment_id: str, kind: str, blob: bytes, *, epoch: int | None = None) -> None:
        """Store `blob` as the experiment's `kind` artifact, replacing the previous one."""
        if len(blob) <= self.inline_max_bytes:
            digest = hashlib.sha256(blob).hexdigest()
            replaced = repo.put(session, experiment_id, kind, blob, epoch=epoch, sha256=digest)
            self._after(session, on_commit=self._deleter(replaced))
            return
        view = memoryview(blob)
        if self.directory is None:
            self.put_chunks(session, experiment_id, kind, _pieces(view), epoch=epoch)
            return
        digest = hashlib.sha256(blob).hexdigest()
        location = f"{experiment_id}/{kind}-{secrets.token_hex(8)}.safetensors"
        self._write(location, blob)
        try:
            replaced = repo.put(
                session, experiment_id, kind, None, size=len(blob), epoch=epoch, location=location, sha256=digest
            )
        except BaseException:
            self._delete([location])
            raise
        self._after(session, on_commit=self._deleter(replaced), on_rollback=self._deleter([location]))

    def put_chunks(
        self,
        session: Session,
        experiment_id: str,
        kind: str,
        pieces: Iterable[bytes | memoryview],
        *,
        epoch: int | None = None,
    ) -> int:
        """Store the blob made of `pieces` (any sizes, read one at a time: a stream of unknown
        length) in the database as chunks of CHUNK_BYTES, replacing the previous artifact; returns
        its size. Holds a chunk and a copy of it for the driver, whatever the blob's size."""
        artifact_id, replaced = repo.put_chunked(session, experiment_id, kind, epoch=epoch)
        digest = hashlib.sha256()
        size = seq = 0
        pending = bytearray()
        for piece in pieces:
            digest.update(piece)
            size += len(piece)
            pending += piece
            while len(pending) >= CHUNK_BYTES:
                with memoryview(pending) as view:  # released before the bytearray is shortened
                    repo.add_chunk(session, artifact_id, seq, view[:CHUNK_BYTES])
                del pending[:CHUNK_BYTES]
                seq += 1
        if pending or seq == 0:
            repo.add_chunk(session, artifact_id, seq, pending)
        repo.seal(session, artifact_id, size=size, sha256=digest.hexdigest())
        self._after(session, on_commit=self._deleter(replaced))
        return size

    def remove(self, session: Session, experiment_id: str, kind: str) -> None:
        """Delete the experiment's `kind` artifact (its file once the transaction commits)."""
        self._after(session, on_commit=self._deleter(repo.remove(session, experiment_id, kind)))

    # -- reads --------------------------------------------------------------------------------

    def path_of(self, artifact: Artifact) -> Path | None:
        """The file of a file-stored artifact (None when the row holds the blob)."""
        if artifact.location is None:
            return None
        if self.directory is None:
            raise ArtifactUnavailable(
                f"the {artifact.kind} artifact of experiment {artifact.experiment_id} is a file in the artifact "
                "directory, but LABTRAIN_ARTIFACT_DIR is not set in this process; set it to the directory the "
                "workers write to"
            )
        path = (self.directory / artifact.location).resolve()
        if not path.is_relative_to(self.directory):
            raise ArtifactUnavailable(f"artifact location {artifact.location!r} is outside the artifact directory")
        return path

    def read(self, session: Session, artifact: Artifact) -> bytes:
        """The blob of `artifact` (a row from repo.get or repo.describe), checked against its sha256."""
        path = self.path_of(artifact)
        if path is None:
            blob = repo.read_data(session, artifact.id)
            if blob is None:  # stored in chunks (or gone: then _chunks says so)
                return b"".join(self._checked(artifact, self._chunks(session, artifact)))
        else:
            try:
                blob = path.read_bytes()
            except FileNotFoundError:
                raise self._missing(artifact, path) from None
        if artifact.sha256 is not None and hashlib.sha256(blob).hexdigest() != artifact.sha256:
            raise self._mismatch(artifact)
        return blob

    def iter_blob(self, session: Session, artifact: Artifact) -> Iterator[bytes]:
        """The blob of `artifact` piece by piece, for streaming it out: at most CHUNK_BATCH chunks
        of a chunked blob in memory, a file in pieces of CHUNK_BYTES, an inline (small) one whole.
        The size and sha256 are checked on the way: ArtifactUnavailable is raised instead of the
        last piece of a blob that is damaged, or was replaced or deleted while being read."""
        path = self.path_of(artifact)
        if path is not None:
            yield from self._checked(artifact, self._file_pieces(artifact, path))
            return
        inline = repo.read_data(session, artifact.id)
        if inline is not None:
            yield self.read(session, artifact)
            return
        yield from self._checked(artifact, self._chunks(session, artifact))

    def _chunks(self, session: Session, artifact: Artifact) -> Iterator[bytes]:
        expected = 0
        for seq, data in repo.read_chunks(session, artifact.id, batch=CHUNK_BATCH):
            if seq != expected:  # a hole: the artifact is being deleted under us
                break
            expected += 1
            yield data
        if expected == 0:
            raise self._gone(artifact)

    def _file_pieces(self, artifact: Artifact, path: Path) -> Iterator[bytes]:
        try:
            with path.open("rb") as f:
                while piece := f.read(CHUNK_BYTES):
                    yield piece
        except FileNotFoundError:
            raise self._missing(artifact, path) from None

    def _checked(self, artifact: Artifact, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """`pieces`, each handed out only once the next one is read, the last one only after the
        whole blob's size and sha256 match the row: a bad blob never reads as complete."""
        digest = hashlib.sha256()
        size = 0
        held: bytes | None = None
        for piece in pieces:
            digest.update(piece)
            size += len(piece)
            if held is not None:
                yield held
            held = piece
        if held is None or size != artifact.size:
            raise self._gone(artifact)
        if artifact.sha256 is not None and digest.hexdigest() != artifact.sha256:
            raise self._mismatch(artifact)
        yield held

    @staticmethod
    def _gone(artifact: Artifact) -> ArtifactUnavailable:
        return ArtifactUnavailable(
            f"the {artifact.kind} artifact of experiment {artifact.experiment_id} is gone (replaced or deleted)"
        )

    @staticmethod
    def _missing(artifact: Artifact, path: Path) -> ArtifactUnavailable:
        return ArtifactUnavailable(
            f"the {artifact.kind} artifact of experiment {artifact.experiment_id} should be the file {path}, "
            "which does not exist: is LABTRAIN_ARTIFACT_DIR the directory the workers write to?"
        )

    @staticmethod
    def _mismatch(artifact: Artifact) -> ArtifactUnavailable:
        return ArtifactUnavailable(
            f"the {artifact.kind} artifact of experiment {artifact.experiment_id} does not match its recorded "
            "sha256; it was not loaded"
        )

    # -- files --------------------------------------------------------------------------------

    def _write(self, location: str, blob: bytes) -> None:
        assert self.directory is not None
        path = self.directory / location
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        with tmp.open("wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the whole file or none

    def _delete(self, locations: list[str]) -> None:
        if self.directory is None:
            return
        for location in locations:
            path = self.directory / location
            try:
                path.unlink(missing_ok=True)  # the experiment's folder stays: a writer may be using it
            except OSError as exc:  # a leftover file wastes space, nothing more
                log.warning("could not delete artifact file %s: %s", path, exc)

    def _deleter(self, locations: list[str]) -> Callable[[], None] | None:
        return (lambda: self._delete(locations)) if locations else None

    @staticmethod
    def _after(
        session: Session,
        *,
        on_commit: Callable[[], None] | None = None,
        on_rollback: Callable[[], None] | None = None,
    ) -> None:
        """Run `on_commit` once the session's current transaction commits, or `on_rollback` if it
        rolls back, whichever comes first (the other is then dropped)."""
        if on_commit is None and on_rollback is None:
            return
        done = False

        def committed(_: Session) -> None:
            nonlocal done
            if not done:
                done = True
                if on_commit is not None:
                    on_commit()

        def rolled_back(_: Session, previous: SessionTransaction | Any) -> None:
            nonlocal done
            if not done and getattr(previous, "parent", None) is None:  # the outermost transaction
                done = True
                if on_rollback is not None:
                    on_rollback()

        event.listen(session, "after_commit", committed)
        event.listen(session, "after_soft_rollback", rolled_back)


def _pieces(view: memoryview) -> Iterator[memoryview]:
    """`view` in slices of CHUNK_BYTES (views: nothing copied)."""
    for start in range(0, len(view), CHUNK_BYTES):
        yield view[start : start + CHUNK_BYTES]
