"""The SQLAlchemy engine and sessions. SQLite (WAL and a busy timeout, so the API and local worker
processes share it) is the embedded default; PostgreSQL (psycopg) is the database of a fleet, its
workers on many machines. Both are created and upgraded by the same Alembic migrations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

SQLITE_BUSY_TIMEOUT_MS = 30_000  # several processes write; wait for the other rather than fail
# A connection kept for each of the API's threads (anyio's 40; a worker opens the one or two it
# uses): with SQLAlchemy's default 5 (+10 that close once used), a busy server connected again on
# most requests, which cost more than their queries (a PostgreSQL connection is a new server process).
POOL = {"pool_size": 40, "max_overflow": 20}
PING_AFTER_IDLE_S = 1.0  # a pause no busy server makes between two uses of a connection
# Every process upgrades the schema as it starts: on PostgreSQL they take turns under this lock.
MIGRATION_LOCK = 0x7475_6E65  # "tune"


class DatabaseError(ValueError):
    """A TUNERY_DATABASE_URL that names no database tunery can use."""


def engine_url(url: str) -> URL:
    """The URL with PostgreSQL's plain forms (postgres://, postgresql://) on the psycopg driver."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseError(f"{url!r} is not a database URL: {exc}") from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseError(f"{url!r}: tunery runs on SQLite or PostgreSQL "
                            "(postgresql+psycopg://user:password@host:5432/database)")
    return parsed


class Database:
    def __init__(self, url: str):
        parsed = engine_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            pool = {}
            if parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                pool = POOL
            self.engine = create_engine(parsed, **pool)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:  # a server: connections that died with it are replaced, not handed out
            self.engine = create_engine(parsed, **POOL)
            event.listen(self.engine, "checkin", _returned)
            event.listen(self.engine, "checkout", _ping_if_idle)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    def create_schema(self) -> None:
        """Bring the schema up to date with the migrations (creating it on a new database)."""
        with self.engine.begin() as connection:
            if self.is_postgresql:  # released when this transaction ends
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config = alembic_config(connection)
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read: its statements run on an autocommit connection, each seeing what is committed,
        without the round trips of a transaction (BEGIN, COMMIT) that a busy PostgreSQL server
        answers each from a process waiting for its turn on the CPU."""
        with (self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection,
              Session(connection, expire_on_commit=False) as session):
            yield session

    def dispose(self) -> None:
        """Close the pooled connections (a process that forked, or one done with the database)."""
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL's recommended durability: a commit survives a crash of any process (a killed worker), only
    # a power loss may take the last commits back; each commit no longer waits for an fsync.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _returned(_dbapi_connection, record) -> None:
    record.info["returned_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
    """A connection idle in the pool for PING_AFTER_IDLE_S (the server may have restarted
    meanwhile) is checked before use and replaced if dead; one in steady use is not: a ping on
    every checkout (pool_pre_ping) was a round trip more on every request. A connection that dies
    in use fails its statement, and SQLAlchemy then replaces the whole pool."""
    if time.monotonic() - record.info.get("returned_at", 0.0) < PING_AFTER_IDLE_S:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()
    except Exception as exc:  # the pool connects again and runs this anew (SQLAlchemy's ping protocol)
        raise DisconnectionError(str(exc)) from exc


def alembic_config(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config
