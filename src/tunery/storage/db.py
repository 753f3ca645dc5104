"""The SQLAlchemy engine and sessions. SQLite (WAL, so the API and worker processes share it)
is the embedded default; any SQLAlchemy URL works in its place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

SQLITE_BUSY_TIMEOUT_MS = 30_000  # two processes write; wait for the other rather than fail


class Database:
    def __init__(self, url: str):
        engine_url = make_url(url)
        if engine_url.get_backend_name() == "sqlite" and engine_url.database not in (None, "", ":memory:"):
            Path(engine_url.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Bring the schema up to date with the migrations (creating it on a new database)."""
        with self.engine.begin() as connection:
            config = alembic_config(connection)
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def alembic_config(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config
