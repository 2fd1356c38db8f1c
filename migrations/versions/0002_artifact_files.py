"""artifacts: a blob may live in LABTRAIN_ARTIFACT_DIR (location) instead of the row; sha256 of every blob

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BLOB = sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("location", sa.String(300), nullable=True))
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))
        batch.alter_column("data", existing_type=BLOB, nullable=True)


def downgrade() -> None:
    # A file-stored artifact has no bytes in the row: it cannot survive the downgrade.
    op.execute("DELETE FROM artifacts WHERE data IS NULL")
    with op.batch_alter_table("artifacts") as batch:
        batch.alter_column("data", existing_type=BLOB, nullable=False)
        batch.drop_column("sha256")
        batch.drop_column("location")
