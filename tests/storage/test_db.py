"""The database layer's connections: a PostgreSQL server that restarts under a pool of idle
connections costs no request, and reads see what writes committed."""

from __future__ import annotations

import time

from tunery.storage import db as db_module
from tunery.storage.db import Database
from tunery.storage.orgs import OrgsRepo


def test_reads_after_a_postgresql_restart_get_new_connections(postgres_cluster):
    database = Database(postgres_cluster.new_database())
    database.create_schema()
    orgs = OrgsRepo(database)
    org = orgs.ensure("restarted")
    assert orgs.get(org.id).name == "restarted"  # its connection is back in the pool, and dies with the server

    postgres_cluster.restart()
    time.sleep(db_module.PING_AFTER_IDLE_S)  # as idle as any connection of a server nobody used meanwhile
    assert orgs.get(org.id).name == "restarted"
    assert orgs.ensure("after the restart").name == "after the restart"
    database.dispose()


def test_a_read_sees_what_was_just_committed(tmp_path, database):
    database = Database(f"sqlite:///{tmp_path / 'tunery.db'}" if database == "sqlite" else database)
    database.create_schema()
    orgs = OrgsRepo(database)
    for n in range(20):  # read right after each write, on the pooled connections reads share
        org = orgs.ensure(f"org-{n}")
        assert orgs.get(org.id).name == f"org-{n}"
    database.dispose()
