"""The migrations build exactly the schema the ORM tables declare, and run again harmlessly."""

from __future__ import annotations

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from tunery.storage.db import Database, alembic_config
from tunery.storage.tables import Base


def test_migrations_match_the_tables_and_are_idempotent(tmp_path, database):
    database = Database(f"sqlite:///{tmp_path / 'tunery.db'}" if database == "sqlite" else database)
    database.create_schema()
    database.create_schema()  # a second start changes nothing
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == [], "write a migration for the table changes (see storage/migrations)"
        assert MigrationContext.configure(connection).get_current_revision() is not None


def test_checkpoints_written_before_0005_get_their_jobs_training_type(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'tunery.db'}")
    with database.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0004")
        connection.execute(text("INSERT INTO organizations (id, name, created_at) VALUES ('org-1', 'default', 0)"))
        for job, kind in (("ftjob-lora", "lora"), ("ftjob-full", "full")):
            connection.execute(text(
                "INSERT INTO jobs (id, organization_id, model, base_model, training_file, seed, status, hyperparameters, "
                "method, result_files, created_at, sort_key, cancel_requested) VALUES (:id, 'org-1', 'm', 'm', 'file-1', 0, "
                "'succeeded', :hp, '{}', '[]', 0, 0, 0)"), {"id": job, "hp": json.dumps({"training_type": kind})})
            connection.execute(text(
                "INSERT INTO checkpoints (id, model_id, job_id, organization_id, base_model, step_number, metrics, created_at) "
                "VALUES (:id, :model, :job, 'org-1', 'm', 3, '{}', 0)"), {"id": f"ftckpt-{kind}", "model": f"ft:m:{kind}",
                                                                         "job": job})
    database.create_schema()  # upgrades to the newest revision
    with database.engine.connect() as connection:
        kinds = dict(connection.execute(text("SELECT id, training_type FROM checkpoints")).all())
    assert kinds == {"ftckpt-lora": "lora", "ftckpt-full": "full"}
