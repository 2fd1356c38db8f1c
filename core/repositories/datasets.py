"""SQL for uploaded datasets: store, read (the bytes only when asked), list, the experiments that
train on one, and delete. Every read is scoped by owner."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, undefer

from core.repositories import rowcount
from core.tables import Experiment, UploadedDataset, utcnow

ACTIVE_STATUSES = ("queued", "running")


def create(
    session: Session, *, owner: str, name: str, format: str, info: dict[str, Any], data: bytes
) -> UploadedDataset:
    """Insert an upload (flushed: a name the owner already uses raises IntegrityError here)."""
    row = UploadedDataset(
        owner=owner, name=name, format=format, info=info, data=data, size=len(data), created_at=utcnow()
    )
    session.add(row)
    session.flush()
    return row


def get(
    session: Session, dataset_id: str, owner: str, *, with_data: bool = False, lock: bool = False
) -> UploadedDataset | None:
    """One of `owner`'s uploads. `with_data` loads its bytes; `lock` holds a shared row lock to the
    end of the transaction (PostgreSQL), so a concurrent delete waits for an experiment that
    is being created on it and then finds it in use."""
    stmt = select(UploadedDataset).where(UploadedDataset.id == dataset_id, UploadedDataset.owner == owner)
    if with_data:
        stmt = stmt.options(undefer(UploadedDataset.data))
    if lock:
        stmt = stmt.with_for_update(read=True)
    return session.scalars(stmt).one_or_none()


def get_by_name(session: Session, owner: str, name: str, *, lock: bool = False) -> UploadedDataset | None:
    """One of `owner`'s uploads by name (unique per owner); `lock` as in `get`."""
    stmt = select(UploadedDataset).where(UploadedDataset.owner == owner, UploadedDataset.name == name)
    if lock:
        stmt = stmt.with_for_update(read=True)
    return session.scalars(stmt).one_or_none()


def list_for(session: Session, owner: str) -> list[UploadedDataset]:
    """The owner's uploads, newest first, without their bytes."""
    stmt = (
        select(UploadedDataset)
        .where(UploadedDataset.owner == owner)
        .order_by(UploadedDataset.created_at.desc(), UploadedDataset.id.desc())
    )
    return list(session.scalars(stmt))


def link(session: Session, dataset_of: dict[str, str | None]) -> None:
    """Record which upload each experiment trains on (experiment id → upload id, None for a
    built-in): a sweep's members, inserted together. One UPDATE per upload."""
    by_upload: dict[str, list[str]] = {}
    for experiment_id, dataset_id in dataset_of.items():
        if dataset_id is not None:
            by_upload.setdefault(dataset_id, []).append(experiment_id)
    for dataset_id, ids in by_upload.items():
        session.execute(update(Experiment).where(Experiment.id.in_(ids)).values(dataset_id=dataset_id))


def active_users(session: Session, dataset_id: str) -> list[str]:
    """Ids of the queued or running experiments that train on the upload, oldest first."""
    stmt = (
        select(Experiment.id)
        .where(Experiment.dataset_id == dataset_id, Experiment.status.in_(ACTIVE_STATUSES))
        .order_by(Experiment.created_at, Experiment.id)
    )
    return list(session.scalars(stmt))


def delete_upload(session: Session, dataset_id: str) -> bool:
    """Delete the upload; the finished experiments trained on it keep their models but no longer
    point at it. A queued or running one (inserted concurrently) makes the DELETE raise
    IntegrityError (the foreign key restricts it). False when there was no such row."""
    session.execute(
        update(Experiment)
        .where(Experiment.dataset_id == dataset_id, Experiment.status.not_in(ACTIVE_STATUSES))
        .values(dataset_id=None)
    )
    return rowcount(session.execute(delete(UploadedDataset).where(UploadedDataset.id == dataset_id))) == 1
