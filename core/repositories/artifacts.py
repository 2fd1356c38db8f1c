"""SQL for artifacts: one model and one checkpoint per experiment, replaced on rewrite.

A row holds its blob in `data`, or names a file (`location`, relative to LABTRAIN_ARTIFACT_DIR)
that core.artifact_store wrote, or has neither: then its blob is the row's `artifact_chunks`,
in `seq` order (deleted with the row by the foreign key's cascade). `sha256` is the blob's
digest in every case. The files themselves are core.artifact_store's business: these functions
only say which locations a write replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session, undefer

from core.tables import Artifact, ArtifactChunk, Experiment, utcnow


class ModelRef(NamedTuple):
    """An experiment's status and the identity of its stored model (no data)."""

    status: str
    artifact_id: int | None
    created_at: datetime | None
    sha256: str | None


# Built once: a prediction runs this on every request, and building the statement costs more
# than running it on SQLite.
_MODEL_REF = (
    select(Experiment.status, Artifact.id, Artifact.created_at, Artifact.sha256)
    .select_from(Experiment)
    .outerjoin(Artifact, and_(Artifact.experiment_id == Experiment.id, Artifact.kind == "model"))
    .where(Experiment.id == bindparam("experiment_id"), Experiment.owner == bindparam("owner"))
)


def put(
    session: Session,
    experiment_id: str,
    kind: str,
    data: bytes | None,
    *,
    size: int | None = None,
    epoch: int | None = None,
    location: str | None = None,
    sha256: str | None = None,
) -> list[str]:
    """Store the experiment's `kind` artifact (its bytes, or the `location` of its file),
    replacing the previous one; returns the file locations the replaced rows named."""
    if (data is None) == (location is None):
        raise ValueError("an artifact is stored either inline (data) or as a file (location), not both")
    replaced = remove(session, experiment_id, kind)
    session.add(
        Artifact(
            experiment_id=experiment_id,
            kind=kind,
            data=data,
            location=location,
            sha256=sha256,
            size=len(data) if data is not None else size,
            epoch=epoch,
            created_at=utcnow(),
        )
    )
    session.flush()
    return replaced


def put_chunked(session: Session, experiment_id: str, kind: str, *, epoch: int | None = None) -> tuple[int, list[str]]:
    """Start storing the experiment's `kind` artifact in chunks, replacing the previous one:
    (the new row's id, the file locations the replaced rows named). The caller adds the chunks
    (`add_chunk`) and then `seal`s the row with the blob's size and digest, in one transaction."""
    replaced = remove(session, experiment_id, kind)
    artifact = Artifact(
        experiment_id=experiment_id, kind=kind, data=None, location=None, size=0, epoch=epoch, created_at=utcnow()
    )
    session.add(artifact)
    session.flush()
    return artifact.id, replaced


def add_chunk(session: Session, artifact_id: int, seq: int, data: bytes | bytearray | memoryview) -> None:
    """One piece of a chunked artifact (a plain INSERT: the session keeps no copy of it)."""
    session.execute(insert(ArtifactChunk).values(artifact_id=artifact_id, seq=seq, data=bytes(data)))


def seal(session: Session, artifact_id: int, *, size: int, sha256: str) -> None:
    """A chunked artifact's size and digest, once every chunk is written."""
    session.execute(
        update(Artifact)
        .where(Artifact.id == artifact_id)
        .values(size=size, sha256=sha256)
        .execution_options(synchronize_session=False)
    )


def read_chunks(session: Session, artifact_id: int, *, batch: int) -> Iterator[tuple[int, bytes]]:
    """The chunks of an artifact as (seq, data), in order, `batch` rows per statement (so at most
    `batch` chunks are in memory). Stops early if the artifact is deleted meanwhile: the caller
    checks the count and the size."""
    seq = 0
    while True:
        stmt = (
            select(ArtifactChunk.seq, ArtifactChunk.data)
            .where(ArtifactChunk.artifact_id == artifact_id, ArtifactChunk.seq >= seq)
            .order_by(ArtifactChunk.seq)
            .limit(batch)
        )
        rows = [(row.seq, row.data) for row in session.execute(stmt)]
        yield from rows
        if len(rows) < batch:
            return
        seq = rows[-1][0] + 1


def get(session: Session, experiment_id: str, kind: str) -> Artifact | None:
    """The artifact with its data loaded (None for a file-stored one), or None."""
    stmt = (
        select(Artifact)
        .where(Artifact.experiment_id == experiment_id, Artifact.kind == kind)
        .options(undefer(Artifact.data))
    )
    return session.scalars(stmt).one_or_none()


def describe(session: Session, experiment_id: str, kind: str) -> Artifact | None:
    """The artifact's row without its data (id, size, location, sha256, created_at), or None."""
    stmt = select(Artifact).where(Artifact.experiment_id == experiment_id, Artifact.kind == kind)
    return session.scalars(stmt).one_or_none()


def model_ref(session: Session, experiment_id: str, owner: str) -> ModelRef | None:
    """The owner's experiment's status and its model artifact's identity, in one query; None when
    the owner has no such experiment."""
    row = session.execute(_MODEL_REF, {"experiment_id": experiment_id, "owner": owner}).one_or_none()
    return ModelRef(*row) if row is not None else None


def get_by_id(session: Session, artifact_id: int) -> Artifact | None:
    """One artifact row without its data, by id."""
    return session.get(Artifact, artifact_id)


def read_data(session: Session, artifact_id: int) -> bytes | None:
    """The inline bytes of one artifact row (None for a file-stored one or a row that is gone)."""
    return session.scalar(select(Artifact.data).where(Artifact.id == artifact_id))


def remove(session: Session, experiment_id: str, kind: str) -> list[str]:
    """Delete the experiment's `kind` artifact; returns the file locations the deleted rows named."""
    stmt = delete(Artifact).where(Artifact.experiment_id == experiment_id, Artifact.kind == kind)
    locations = session.scalars(stmt.returning(Artifact.location)).all()
    return [loc for loc in locations if loc is not None]
