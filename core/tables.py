"""The ORM tables (SQLAlchemy 2, typed). Rows are experiments, not networks; schemas live in api/.

Designed for the issues ahead: sweeps (4), uploaded datasets and owners (8), test evaluations.
Every resource carries an `owner` so API keys can scope it later without a migration.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# PostgreSQL stores JSON as jsonb and blobs as bytea; SQLite as JSON text and BLOB.
JSONType = JSON().with_variant(JSONB(), "postgresql")
Blob = LargeBinary().with_variant(BYTEA(), "postgresql")


class TagList(TypeDecorator[list[str]]):
    """Tags as one text, `,a,b,` (ml.spec.Tag has no comma): `,x,` is in it exactly when `x` is a
    tag, one substring test on SQLite and PostgreSQL alike (core.repositories.tags). Empty: ''."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Any) -> str:
        return f",{','.join(value)}," if value else ""

    def process_result_value(self, value: str | None, dialect: Any) -> list[str]:
        return [t for t in (value or "").split(",") if t]


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

EXPERIMENT_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "diverged")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "diverged"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A short random id (16 hex digits, 64 bits): easy to type in a curl line."""
    return secrets.token_hex(8)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONType, bytes: Blob, datetime: DateTime(timezone=True)}


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(100), index=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20), default="running")
    tags: Mapped[list[str]] = mapped_column(TagList, default=list, server_default="")
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UploadedDataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(10))  # "csv" | "npz"
    info: Mapped[dict[str, Any]]  # DatasetInfo.to_dict()
    data: Mapped[bytes] = mapped_column(Blob, deferred=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("owner", "name", name="uq_datasets_owner_name"),)


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    spec: Mapped[dict[str, Any]]  # normalized, every default filled
    task: Mapped[str] = mapped_column(String(20))
    param_count: Mapped[int] = mapped_column(BigInteger)
    queue: Mapped[str] = mapped_column(String(20), default="cpu")
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    latest_metrics: Mapped[dict[str, Any] | None]
    best_metrics: Mapped[dict[str, Any] | None]
    served_metrics: Mapped[dict[str, Any] | None]  # of the kept weights (spec `keep`), what is served
    error: Mapped[str | None] = mapped_column(Text)
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL"))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    device: Mapped[str | None] = mapped_column(String(20))
    worker: Mapped[str | None] = mapped_column(String(200))  # the Celery hostname that holds it
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # claims so far; also the writer's fencing token
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))  # of the normalized spec, for key reuse
    test_evaluations: Mapped[int] = mapped_column(Integer, default=0)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    tags: Mapped[list[str]] = mapped_column(TagList, default=list, server_default="")  # set at submission or by PATCH
    notes: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_experiments_owner_idempotency_key"),
        # Listing newest first with a (created_at, id) cursor, per owner and filtered.
        Index("ix_experiments_owner_created", "owner", "created_at", "id"),
        Index("ix_experiments_owner_status_created", "owner", "status", "created_at", "id"),
        Index("ix_experiments_sweep", "sweep_id", "created_at", "id"),
        Index("ix_experiments_status_heartbeat", "status", "heartbeat_at"),  # the reconciler's scan
        Index("ix_experiments_queue_order", "status", "queue", "created_at", "id"),  # queue_position
        Index("ix_experiments_dataset", "dataset_id"),  # "is this upload in use?" and the FK check on delete
    )


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)  # 1-based
    train_loss: Mapped[float | None] = mapped_column(Float)  # None when not finite
    val_loss: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]]  # val_accuracy | val_rmse | per-target metrics
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("experiment_id", "epoch", name="uq_epoch_metrics_experiment_epoch"),)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # "model" | "checkpoint"
    data: Mapped[bytes | None] = mapped_column(Blob, deferred=True)  # None when stored as a file
    location: Mapped[str | None] = mapped_column(String(300))  # the file, relative to LABTRAIN_ARTIFACT_DIR
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the blob, checked when it is read
    size: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(Integer)  # the last epoch it contains
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("experiment_id", "kind", name="uq_artifacts_experiment_kind"),)


class ArtifactChunk(Base):
    """One piece of an artifact stored in pieces (its row has neither `data` nor `location`):
    core.artifact_store writes and reads them one at a time, so no host holds the whole blob."""

    __tablename__ = "artifact_chunks"

    artifact_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0-based, in blob order
    data: Mapped[bytes] = mapped_column(Blob)


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(10))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookSecret(Base):
    """An owner's webhook signing secret, made on first use when LABTRAIN_WEBHOOK_SECRET is unset,
    so the API and every worker sign with the same one."""

    __tablename__ = "webhook_secrets"

    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to POST (the outbox): inserted in the transaction that makes it true, sent after
    the commit by `labtrain.deliver_webhook`, `pending` until `delivered` or `failed`."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(100))
    experiment_id: Mapped[str | None] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(20))  # a terminal status, or "finished" (a sweep)
    url: Mapped[str] = mapped_column(String(2000))
    payload: Mapped[dict[str, Any]]  # the event body, fixed when the event happened
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]  # a sender holds it until then (a duplicate message skips it)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("experiment_id", "event", name="uq_webhook_deliveries_experiment_event"),
        UniqueConstraint("sweep_id", "event", name="uq_webhook_deliveries_sweep_event"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),  # the reconciler's scan
    )


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)  # 1-based
    status_code: Mapped[int | None] = mapped_column(Integer)  # None: no answer (see error)
    error: Mapped[str | None] = mapped_column(Text)
    duration_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
