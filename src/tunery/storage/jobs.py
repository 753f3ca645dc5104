"""Rows of fine-tuning jobs and their events, and the queue operations on them: a worker claims
a job with a lease, keeps it alive with heartbeats, and a silent worker's job is claimed again."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select, update

from tunery.ids import new_id, now
from tunery.storage.db import Database
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
        with self.db.session() as s:
            row = s.get(Job, job_id)
            return row if row is not None and (org_id is None or row.organization_id == org_id) else None

    def list(self, org_id: str, *, limit: int, after: str | None = None,
             metadata: dict[str, str] | None = None, status: str | None = None) -> list[Job]:
        """Newest first; with metadata, only jobs whose metadata holds every given pair; with
        status, only jobs in that status."""
        with self.db.session() as s:
            query = select(Job).where(Job.organization_id == org_id)
            if status is not None:
                query = query.where(Job.status == status)
            for key, value in (metadata or {}).items():
                query = query.where(Job.metadata_[key].as_string() == value)
            if after and (anchor := s.get(Job, after)) is not None:
                query = query.where(Job.sort_key < anchor.sort_key)
            return list(s.scalars(query.order_by(Job.sort_key.desc()).limit(limit)))

    def count_active(self, org_id: str) -> int:
        with self.db.session() as s:
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

    def claim(self, statuses: tuple[str, ...], new_status: str, worker_id: str,
              lease_seconds: float) -> Job | None:
        """Atomically take the oldest job in one of `statuses` that no live worker holds (its
        lease is empty or ran out), move it to new_status and lease it to worker_id."""
        with self.db.session() as s:
            lease = Job.lease_expires_at
            free = lease.is_(None) | (lease < time.time())
            candidate = s.scalar(select(Job).where(Job.status.in_(statuses), free).order_by(Job.sort_key).limit(1))
            if candidate is None:
                return None
            # Taken only if nobody changed it since we looked (another worker's claim would).
            unchanged = lease.is_(None) if candidate.lease_expires_at is None else lease == candidate.lease_expires_at
            taken = s.execute(
                update(Job).where(Job.id == candidate.id, Job.status == candidate.status, unchanged)
                .values(status=new_status, worker_id=worker_id, lease_expires_at=time.time() + lease_seconds)
            )
            if taken.rowcount != 1:
                return None
        return self.get(None, candidate.id)

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
                  data: dict[str, Any] | None = None) -> None:
        with self.db.session() as s:
            s.add(JobEvent(id=new_id("ftevent"), job_id=job_id, created_at=now(), level=level,
                           message=message, type=type, data=data))

    def events(self, job_id: str, *, limit: int, after: str | None = None) -> list[JobEvent]:
        """Newest first, as OpenAI returns them; `after` is the last event id of the previous page."""
        with self.db.session() as s:
            query = select(JobEvent).where(JobEvent.job_id == job_id)
            if after and (anchor := s.scalar(select(JobEvent).where(JobEvent.id == after))) is not None:
                query = query.where(JobEvent.seq < anchor.seq)
            return list(s.scalars(query.order_by(JobEvent.seq.desc()).limit(limit)))
