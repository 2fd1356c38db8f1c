"""experiments: an index on dataset_id, for DELETE /datasets/{id} ("in use?") and its foreign key

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_experiments_dataset", "experiments", ["dataset_id"])


def downgrade() -> None:
    op.drop_index("ix_experiments_dataset", table_name="experiments")
