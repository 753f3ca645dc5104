"""Claiming work with a lease, for workers on many machines: the oldest row of a queue table (fine-
tuning jobs, eval runs) that no live worker holds is taken atomically. PostgreSQL: the candidate
row is locked and rows other workers hold locked are skipped (SELECT ... FOR UPDATE SKIP LOCKED).
SQLite (one writer at a time): a compare-and-set on the row's status and lease, tried again when
another worker won the race."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Select, update

from tunery.storage.db import Database

CLAIM_RACES = 20  # SQLite: claims lost to another worker before giving up until the next poll
Row = TypeVar("Row")


def claim_oldest(db: Database, table: type[Row], query: Select,
                 values: Callable[[Row], dict[str, Any]]) -> tuple[Row, str | None] | None:
    """The first row of `query` (its oldest claimable, ordered and limited to one by the caller),
    changed to values(row) (its new status, worker_id and lease_expires_at among them); with the
    worker that held it before (a take-over when its lease ran out), or None when there is none."""
    lease = table.lease_expires_at
    for _ in range(CLAIM_RACES):
        with db.session() as s:
            if db.is_postgresql:
                row = s.scalar(query.with_for_update(skip_locked=True))
                if row is None:
                    return None
                previous = row.worker_id
                for name, value in values(row).items():
                    setattr(row, name, value)
                return row, previous
            candidate = s.scalar(query)
            if candidate is None:
                return None
            previous = candidate.worker_id  # read now: the update below refreshes the object
            # Taken only if nobody changed it since we looked (another worker's claim would).
            unchanged = lease.is_(None) if candidate.lease_expires_at is None else lease == candidate.lease_expires_at
            taken = s.execute(update(table).where(table.id == candidate.id, table.status == candidate.status, unchanged)
                              .values(**values(candidate)))
            if taken.rowcount == 1:
                break
    else:
        return None  # every look lost its race: the caller polls again
    with db.reading() as s:
        return s.get(table, candidate.id), previous
