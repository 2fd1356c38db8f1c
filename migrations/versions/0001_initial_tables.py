"""initial tables: experiments, epoch metrics, artifacts, sweeps, datasets, evaluations

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of core.tables' portable types: a migration never imports the live models.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BLOB = sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("format", sa.String(10), nullable=False),
        sa.Column("info", JSON, nullable=False),
        sa.Column("data", BLOB, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("owner", "name", name="uq_datasets_owner_name"),
    )
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    op.create_index(op.f("ix_sweeps_owner"), "sweeps", ["owner"])

    op.create_table(
        "experiments",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("task", sa.String(20), nullable=False),
        sa.Column("param_count", sa.BigInteger(), nullable=False),
        sa.Column("queue", sa.String(20), nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("latest_metrics", JSON, nullable=True),
        sa.Column("best_metrics", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sweep_id", sa.String(32), nullable=True),
        sa.Column("dataset_id", sa.String(32), nullable=True),
        sa.Column("device", sa.String(20), nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("test_evaluations", sa.Integer(), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_experiments_dataset_id_datasets"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name=op.f("fk_experiments_sweep_id_sweeps"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_experiments_owner_idempotency_key"),
    )
    op.create_index("ix_experiments_owner_created", "experiments", ["owner", "created_at", "id"])
    op.create_index("ix_experiments_owner_status_created", "experiments", ["owner", "status", "created_at", "id"])
    op.create_index("ix_experiments_status_heartbeat", "experiments", ["status", "heartbeat_at"])
    op.create_index("ix_experiments_sweep", "experiments", ["sweep_id", "created_at", "id"])

    op.create_table(
        "artifacts",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("data", BLOB, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_artifacts_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("experiment_id", "kind", name="uq_artifacts_experiment_kind"),
    )
    op.create_table(
        "epoch_metrics",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_epoch_metrics_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_epoch_metrics")),
        sa.UniqueConstraint("experiment_id", "epoch", name="uq_epoch_metrics_experiment_epoch"),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("split", sa.String(10), nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_evaluations_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    op.create_index(op.f("ix_evaluations_experiment_id"), "evaluations", ["experiment_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_evaluations_experiment_id"), table_name="evaluations")
    op.drop_table("evaluations")
    op.drop_table("epoch_metrics")
    op.drop_table("artifacts")
    for name in (
        "ix_experiments_sweep",
        "ix_experiments_status_heartbeat",
        "ix_experiments_owner_status_created",
        "ix_experiments_owner_created",
    ):
        op.drop_index(name, table_name="experiments")
    op.drop_table("experiments")
    op.drop_index(op.f("ix_sweeps_owner"), table_name="sweeps")
    op.drop_table("sweeps")
    op.drop_table("datasets")
