"""Rows of the workers table: each live worker process reports itself (host, device, labels, the
job it holds) with a heartbeat, so that `tunery workers` can list the fleet and a CPU worker can
leave GPU jobs to the GPU workers that are there."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from tunery.storage.db import Database
from tunery.storage.tables import Worker


class WorkersRepo:
    def __init__(self, db: Database):
        self.db = db

    def beat(self, worker_id: str, *, host: str, pid: int, device: str, labels: list[str], job_id: str | None,
             started_at: float) -> None:
        """The worker's row as of now, made on its first beat."""
        with self.db.session() as s:
            row = s.get(Worker, worker_id)
            if row is None:
                s.add(Worker(id=worker_id, host=host, pid=pid, device=device, labels=labels, job_id=job_id,
                             started_at=started_at, heartbeat_at=time.time()))
            else:
                row.device, row.labels, row.job_id, row.heartbeat_at = device, labels, job_id, time.time()

    def remove(self, worker_id: str) -> None:
        with self.db.session() as s:
            s.execute(delete(Worker).where(Worker.id == worker_id))

    def live(self, within_seconds: float) -> list[Worker]:
        """Workers heard from within the last `within_seconds`, longest running first."""
        with self.db.session() as s:
            return list(s.scalars(select(Worker).where(Worker.heartbeat_at >= time.time() - within_seconds)
                                  .order_by(Worker.started_at)))

    def on_host(self, host: str) -> list[Worker]:
        """Every worker row of one machine, live or not."""
        with self.db.session() as s:
            return list(s.scalars(select(Worker).where(Worker.host == host)))

    def forget_silent(self, silent_seconds: float) -> None:
        """Drop the rows of workers silent this long (they died without saying so)."""
        with self.db.session() as s:
            s.execute(delete(Worker).where(Worker.heartbeat_at < time.time() - silent_seconds))
