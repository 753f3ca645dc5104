"""Rows of evals, their runs and the runs' output items, and the queue operations on runs: a
worker claims a queued run with a lease (storage/leases.py, as jobs are claimed), extends it
while it works, and records each batch of graded items in one transaction that first checks, in a
conditional UPDATE, that it still holds the run and that the run still runs (a cancel, a delete
or another worker's take-over in between, and the batch is not written)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, select, update

from tunery.storage.db import Database
from tunery.storage.leases import claim_oldest
from tunery.storage.tables import Eval, EvalOutputItem, EvalRun

ACTIVE_RUN_STATUSES = ("queued", "in_progress")


def _page(query, column, anchor_value, order: str):
    """The query ordered by `column` in `order`, after the anchor's value when there is one."""
    if anchor_value is not None:
        query = query.where(column < anchor_value if order == "desc" else column > anchor_value)
    return query.order_by(column.desc() if order == "desc" else column)


class EvalsRepo:
    def __init__(self, db: Database):
        self.db = db

    # evals -----------------------------------------------------------------------------------------
    def add(self, row: Eval | EvalRun) -> None:
        with self.db.session() as s:
            s.add(row)

    def get(self, org_id: str, eval_id: str) -> Eval | None:
        """The eval, or None when it does not exist or belongs to another organization."""
        with self.db.reading() as s:
            row = s.get(Eval, eval_id)
            return row if row is not None and row.organization_id == org_id else None

    def list(self, org_id: str, *, limit: int, after: str | None, order: str, order_by: str) -> list[Eval]:
        column = Eval.updated_at if order_by == "updated_at" else Eval.sort_key
        with self.db.reading() as s:
            anchor = s.get(Eval, after) if after else None
            value = getattr(anchor, column.key) if anchor is not None else None
            query = _page(select(Eval).where(Eval.organization_id == org_id), column, value, order)
            return list(s.scalars(query.limit(limit)))

    def update(self, eval_id: str, **fields: Any) -> None:
        with self.db.session() as s:
            s.execute(update(Eval).where(Eval.id == eval_id).values(updated_at=time.time(), **fields))

    def delete(self, eval_id: str) -> None:
        """The eval, its runs and their output items (a run in progress stops at its next batch).
        The runs' rows are locked first (PostgreSQL; SQLite has one writer at a time): a batch
        being recorded commits before its items are deleted, and one that comes after finds its
        run gone and records nothing (no output item left pointing at a deleted run)."""
        with self.db.session() as s:
            runs = select(EvalRun.id).where(EvalRun.eval_id == eval_id)
            s.execute(runs.with_for_update()).all()
            s.execute(delete(EvalOutputItem).where(EvalOutputItem.run_id.in_(runs)))
            s.execute(delete(EvalRun).where(EvalRun.eval_id == eval_id))
            s.execute(delete(Eval).where(Eval.id == eval_id))

    # runs ------------------------------------------------------------------------------------------
    def run(self, eval_id: str | None, run_id: str) -> EvalRun | None:
        """The run, or None when it is not a run of that eval (eval_id None: of any)."""
        with self.db.reading() as s:
            row = s.get(EvalRun, run_id)
            return row if row is not None and (eval_id is None or row.eval_id == eval_id) else None

    def runs(self, eval_id: str, *, limit: int, after: str | None, order: str, status: str | None) -> list[EvalRun]:
        with self.db.reading() as s:
            anchor = s.get(EvalRun, after) if after else None
            query = select(EvalRun).where(EvalRun.eval_id == eval_id)
            if status is not None:
                query = query.where(EvalRun.status == status)
            query = _page(query, EvalRun.sort_key, anchor.sort_key if anchor is not None else None, order)
            return list(s.scalars(query.limit(limit)))

    def count_active_runs(self, org_id: str) -> int:
        with self.db.reading() as s:
            return s.scalar(select(func.count()).select_from(EvalRun).where(
                EvalRun.organization_id == org_id, EvalRun.status.in_(ACTIVE_RUN_STATUSES)))

    def cancel_run(self, run_id: str) -> bool:
        """Canceled now, if it is still queued or in progress; its worker stops at its next batch."""
        with self.db.session() as s:
            return s.execute(update(EvalRun).where(EvalRun.id == run_id, EvalRun.status.in_(ACTIVE_RUN_STATUSES))
                             .values(status="canceled", worker_id=None, lease_expires_at=None)).rowcount == 1

    def delete_run(self, run_id: str) -> None:
        """The run and its output items, its row locked first (as delete does its eval's runs)."""
        with self.db.session() as s:
            s.execute(select(EvalRun.id).where(EvalRun.id == run_id).with_for_update()).all()
            s.execute(delete(EvalOutputItem).where(EvalOutputItem.run_id == run_id))
            s.execute(delete(EvalRun).where(EvalRun.id == run_id))

    # the queue -------------------------------------------------------------------------------------
    def claim_run(self, worker_id: str, lease_seconds: float) -> tuple[EvalRun, str | None] | None:
        """Atomically take the oldest queued run, or one in progress whose worker's lease ran
        out, and lease it to worker_id (status in_progress). Returns it and the worker that held
        it before (a take-over, counted in the run's crashes), or None."""
        lease = EvalRun.lease_expires_at
        query = (select(EvalRun).where(EvalRun.status.in_(ACTIVE_RUN_STATUSES), lease.is_(None) | (lease < time.time()))
                 .order_by(EvalRun.sort_key).limit(1))
        return claim_oldest(self.db, EvalRun, query, lambda row: dict(
            status="in_progress", worker_id=worker_id, lease_expires_at=time.time() + lease_seconds,
            crashes=row.crashes + int(row.worker_id is not None)))

    def _held(self, run_id: str, worker_id: str):
        return update(EvalRun).where(EvalRun.id == run_id, EvalRun.worker_id == worker_id,
                                     EvalRun.status == "in_progress")

    def heartbeat_run(self, run_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the run is no longer this worker's to run (canceled,
        deleted, taken over)."""
        with self.db.session() as s:
            return s.execute(self._held(run_id, worker_id).values(
                lease_expires_at=time.time() + lease_seconds)).rowcount == 1

    def record_batch(self, run_id: str, worker_id: str, items: list[EvalOutputItem], **fields: Any) -> bool:
        """The batch's output items and the run's new counts, together, only while the worker
        holds the run and it runs; False (nothing written) otherwise."""
        with self.db.session() as s:
            if s.execute(self._held(run_id, worker_id).values(**fields)).rowcount != 1:
                return False
            s.add_all(items)
            return True

    def release_run(self, run_id: str, worker_id: str, **fields: Any) -> bool:
        """The run let go by its worker: finished (fields say how) or handed back to the queue."""
        with self.db.session() as s:
            return s.execute(self._held(run_id, worker_id).values(worker_id=None, lease_expires_at=None,
                                                                  **fields)).rowcount == 1

    # output items ----------------------------------------------------------------------------------
    def output_items(self, run_id: str, *, limit: int, after: str | None, order: str,
                     status: str | None) -> list[EvalOutputItem]:
        with self.db.reading() as s:
            anchor = s.scalar(select(EvalOutputItem).where(EvalOutputItem.id == after)) if after else None
            query = select(EvalOutputItem).where(EvalOutputItem.run_id == run_id)
            if status is not None:
                query = query.where(EvalOutputItem.status == status)
            query = _page(query, EvalOutputItem.seq, anchor.seq if anchor is not None else None, order)
            return list(s.scalars(query.limit(limit)))

    def output_item(self, run_id: str, item_id: str) -> EvalOutputItem | None:
        with self.db.reading() as s:
            return s.scalar(select(EvalOutputItem).where(EvalOutputItem.id == item_id, EvalOutputItem.run_id == run_id))
