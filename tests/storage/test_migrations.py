"""The migrations build exactly the schema the ORM tables declare, and run again harmlessly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tunery.storage.db import Database
from tunery.storage.tables import Base


def test_migrations_match_the_tables_and_are_idempotent(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'tunery.db'}")
    database.create_schema()
    database.create_schema()  # a second start changes nothing
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == [], "write a migration for the table changes (see storage/migrations)"
        assert MigrationContext.configure(connection).get_current_revision() is not None
