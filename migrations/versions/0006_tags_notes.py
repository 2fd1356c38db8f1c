"""experiments and sweeps: tags (one text, `,a,b,`: core.tables.TagList) and notes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("experiments", "sweeps"):
        with op.batch_alter_table(table) as batch:
            # Rows from before this revision have no tags (''), and no notes.
            batch.add_column(sa.Column("tags", sa.Text(), server_default="", nullable=False))
            batch.add_column(sa.Column("notes", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in ("experiments", "sweeps"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("notes")
            batch.drop_column("tags")
