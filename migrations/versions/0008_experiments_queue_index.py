"""experiments: an index on (status, queue, created_at, id), for `queue_position` (how many are
queued ahead on a queue), read with every submission and every read of a queued experiment

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_experiments_queue_order", "experiments", ["status", "queue", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_experiments_queue_order", table_name="experiments")
