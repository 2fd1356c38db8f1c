"""The migrations build exactly the tables the code declares (core/tables.py), on SQLite and
PostgreSQL: a column, index or constraint added to one and not the other fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core.db import create_db_engine, upgrade_database
from core.tables import Base
from tests.conftest import fresh_database


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migrations_match_the_declared_tables(kind: str, tmp_path: Path) -> None:
    with fresh_database(kind, tmp_path) as url:
        upgrade_database(url)
        engine = create_db_engine(url)
        try:
            with engine.connect() as connection:
                differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        finally:
            engine.dispose()
    assert differences == []
