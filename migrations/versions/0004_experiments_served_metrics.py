"""experiments: served_metrics, the validation metrics of the kept weights (spec `keep`)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("served_metrics", JSON, nullable=True))
    # Runs finished before this revision keep null: which weights they stored (the last epoch's,
    # or under early stopping the best validation loss's) was not recorded.


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("served_metrics")
