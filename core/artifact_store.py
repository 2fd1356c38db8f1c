"""Where artifact blobs live: in the database row (the default, and for every small blob), or as
a file under LABTRAIN_ARTIFACT_DIR when that is set and the blob is larger than
LABTRAIN_ARTIFACT_INLINE_MAX_BYTES. API and worker hosts share only the database (and this
directory, mounted anywhere: rows name files relative to it), so a row says where its blob is.

Files are written before their row (to a temporary name, then renamed, so a reader never sees a
partial file) under a name used once, and never rewritten. The files a write replaces are deleted
after the transaction commits; a file written by a transaction that rolls back is deleted then.
Every read checks the blob against the row's sha256: a wrong or damaged blob is refused, never
loaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from core.repositories import artifacts as repo
from core.settings import Settings
from core.tables import Artifact

log = logging.getLogger("labtrain.artifacts")


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
        digest = hashlib.sha256(blob).hexdigest()
        if self.directory is None or len(blob) <= self.inline_max_bytes:
            replaced = repo.put(session, experiment_id, kind, blob, epoch=epoch, sha256=digest)
            self._after(session, on_commit=self._deleter(replaced))
            return
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
            if blob is None:
                raise ArtifactUnavailable(
                    f"the {artifact.kind} artifact of experiment {artifact.experiment_id} is gone (replaced or deleted)"
                )
        else:
            try:
                blob = path.read_bytes()
            except FileNotFoundError:
                raise ArtifactUnavailable(
                    f"the {artifact.kind} artifact of experiment {artifact.experiment_id} should be the file {path}, "
                    "which does not exist: is LABTRAIN_ARTIFACT_DIR the directory the workers write to?"
                ) from None
        if artifact.sha256 is not None and hashlib.sha256(blob).hexdigest() != artifact.sha256:
            raise ArtifactUnavailable(
                f"the {artifact.kind} artifact of experiment {artifact.experiment_id} does not match its recorded "
                "sha256; it was not loaded"
            )
        return blob

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
