"""artifact_chunks: an artifact larger than LABTRAIN_ARTIFACT_INLINE_MAX_BYTES, with no
LABTRAIN_ARTIFACT_DIR, is stored in the database as numbered pieces of at most 1 MiB, so every
host reaches it through the database alone and nobody holds it whole to write or stream it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of core.tables' portable types: a migration never imports the live models.
BLOB = sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "artifact_chunks",
        sa.Column("artifact_id", SERIAL, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", BLOB, nullable=False),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_artifact_chunks_artifact_id_artifacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_id", "seq", name=op.f("pk_artifact_chunks")),
    )


def downgrade() -> None:
    # A chunked artifact has neither bytes in its row nor a file: it cannot survive the downgrade.
    op.execute("DELETE FROM artifacts WHERE data IS NULL AND location IS NULL")
    op.drop_table("artifact_chunks")
