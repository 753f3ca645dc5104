"""The SQLAlchemy engine and sessions. SQLite (WAL and a busy timeout, so the API and local worker
processes share it) is the embedded default; PostgreSQL (psycopg) is the database of a fleet, its
workers on many machines. Both are created and upgraded by the same Alembic migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

SQLITE_BUSY_TIMEOUT_MS = 30_000  # several processes write; wait for the other rather than fail
# A connection kept for each of the API's threads (anyio's 40; a worker opens the one or two it
# uses): with SQLAlchemy's default 5 (+10 that close once used), a busy server connected again on
# most requests, which cost more than their queries (a PostgreSQL connection is a new server process).
POOL = {"pool_size": 40, "max_overflow": 20}
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
            self.engine = create_engine(parsed, pool_pre_ping=True, **POOL)
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


def alembic_config(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config
