"""Rows of fine-tuning jobs and their events, and the queue operations on them: a worker claims
a job with a lease, keeps it alive with heartbeats, and a silent worker's job is claimed again
(a take-over, counted)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import exists, func, insert, literal, select, update

from tunery.ids import new_id, now
from tunery.storage.db import Database
from tunery.storage.leases import claim_oldest
from tunery.storage.tables import Job, JobEvent


class JobsRepo:
    def __init__(self, db: Database):
        self.db = db

    def add(self, row: Job) -> Job:
        with self.db.session() as s:
            s.add(row)
        return row

    def get(self, org_id: str | None, job_id: str) -> Job | None:
        """The job, or None when it does not exist or belongs to another organization."""
        with self.db.reading() as s:
            row = s.get(Job, job_id)
            return row if row is not None and (org_id is None or row.organization_id == org_id) else None

    def list(self, org_id: str, *, limit: int, after: str | None = None,
             metadata: dict[str, str] | None = None, status: str | None = None) -> list[Job]:
        """Newest first; with metadata, only jobs whose metadata holds every given pair; with
        status, only jobs in that status."""
        with self.db.reading() as s:
            query = select(Job).where(Job.organization_id == org_id)
            if status is not None:
                query = query.where(Job.status == status)
            for key, value in (metadata or {}).items():
                query = query.where(Job.metadata_[key].as_string() == value)
            if after and (anchor := s.get(Job, after)) is not None:
                query = query.where(Job.sort_key < anchor.sort_key)
            return list(s.scalars(query.order_by(Job.sort_key.desc()).limit(limit)))

    def count_active(self, org_id: str) -> int:
        with self.db.reading() as s:
            return s.scalar(select(func.count()).select_from(Job).where(
                Job.organization_id == org_id, Job.status.in_(("validating_files", "queued", "running"))))

    def update(self, job_id: str, *, only_if_status: str | None = None, only_if_held: bool | None = None,
               only_if_worker: str | None = None, only_if_not_cancelling: bool = False, **fields: Any) -> bool:
        """Set fields, only while the job still is as the caller saw it: in only_if_status, held
        by a worker or not (only_if_held), held by only_if_worker, with no cancel asked
        (only_if_not_cancelling)."""
        with self.db.session() as s:
            query = update(Job).where(Job.id == job_id)
            if only_if_status is not None:
                query = query.where(Job.status == only_if_status)
            if only_if_held is not None:
                query = query.where(Job.worker_id.is_not(None) if only_if_held else Job.worker_id.is_(None))
            if only_if_worker is not None:
                query = query.where(Job.worker_id == only_if_worker)
            if only_if_not_cancelling:
                query = query.where(Job.cancel_requested.is_not(True))
            return s.execute(query.values(**fields)).rowcount == 1

    def claim(self, statuses: tuple[str, ...], new_status: str, worker_id: str, lease_seconds: float, *,
              skip_device: str | None = None) -> tuple[Job, str | None] | None:
        """Atomically take the oldest job in one of `statuses` that no live worker holds (its
        lease is empty or ran out), move it to new_status and lease it to worker_id; jobs that
        want skip_device are left to others. Returns the job and the worker that held it before
        when its lease ran out (a take-over, counted in the job's crashes), or None.
        (storage/leases.py: FOR UPDATE SKIP LOCKED on PostgreSQL, a compare-and-set on SQLite)."""
        lease = Job.lease_expires_at
        query = select(Job).where(Job.status.in_(statuses), lease.is_(None) | (lease < time.time()))
        if skip_device is not None:
            query = query.where(Job.device.is_(None) | (Job.device != skip_device))
        return claim_oldest(self.db, Job, query.order_by(Job.sort_key).limit(1), lambda row: dict(
            status=new_status, worker_id=worker_id, lease_expires_at=time.time() + lease_seconds,
            crashes=row.crashes + int(row.worker_id is not None)))

    def expire_leases(self, worker_ids: list[str]) -> int:
        """End the leases of workers known to be gone (their process ended), so their jobs are
        taken over now rather than when the lease runs out."""
        if not worker_ids:
            return 0
        with self.db.session() as s:
            return s.execute(update(Job).where(Job.worker_id.in_(worker_ids), Job.lease_expires_at.is_not(None))
                             .values(lease_expires_at=0.0)).rowcount

    def release(self, job_id: str, *, only_if_status: str | None = None, only_if_worker: str | None = None,
                only_if_not_cancelling: bool = False, **fields: Any) -> bool:
        """Hand the job back to the queue (or finish it): no worker, no lease."""
        return self.update(job_id, only_if_status=only_if_status, only_if_worker=only_if_worker,
                           only_if_not_cancelling=only_if_not_cancelling, worker_id=None, lease_expires_at=None,
                           **fields)

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float, **fields: Any) -> bool:
        """Extend the lease; False when the job should stop: it is no longer this worker's, or
        no longer running (paused), or cancel was asked."""
        with self.db.session() as s:
            done = s.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id)
                             .values(lease_expires_at=time.time() + lease_seconds, **fields))
            row = s.get(Job, job_id)
            return done.rowcount == 1 and row.status == "running" and not row.cancel_requested

    # events ----------------------------------------------------------------------------------
    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict[str, Any] | None = None, only_if_worker: str | None = None) -> bool:
        """Log an event; with only_if_worker, only while that worker holds the job (one statement:
        a worker that lost its lease writes nothing on the job it no longer has)."""
        values = dict(id=new_id("ftevent"), job_id=job_id, created_at=now(), level=level, message=message,
                      type=type, data=data)
        with self.db.session() as s:
            if only_if_worker is None:
                s.add(JobEvent(**values))
                return True
            columns = list(values)
            held = select(*(literal(value, JobEvent.__table__.c[name].type) for name, value in values.items())) \
                .where(exists().where(Job.id == job_id, Job.worker_id == only_if_worker))
            return s.execute(insert(JobEvent).from_select(columns, held).returning(JobEvent.seq)).first() is not None

    def event(self, job_id: str, event_id: str) -> JobEvent | None:
        """One event of the job; None when it has no such event."""
        with self.db.reading() as s:
            return s.scalar(select(JobEvent).where(JobEvent.id == event_id, JobEvent.job_id == job_id))

    def last_metrics_step(self, job_id: str) -> int | None:
        with self.db.reading() as s:
            data = s.scalar(select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
                            .order_by(JobEvent.seq.desc()).limit(1))
            return (data or {}).get("step")

    def events(self, job_id: str, *, limit: int, after: str | None = None) -> list[JobEvent]:
        """Newest first, as OpenAI returns them; `after` is the last event id of the previous page."""
        with self.db.reading() as s:
            query = select(JobEvent).where(JobEvent.job_id == job_id)
            if after and (anchor := s.scalar(select(JobEvent).where(JobEvent.id == after))) is not None:
                query = query.where(JobEvent.seq < anchor.seq)
            return list(s.scalars(query.order_by(JobEvent.seq.desc()).limit(limit)))
