"""The job queue as workers see it: claim a job with a lease, keep the lease with heartbeats,
report events, and let the job go (validated, succeeded, failed, cancelled, paused or handed
back to the queue). Every change is conditional on the job still being as the worker saw it,
so a cancel, pause or another worker's claim in between is never overwritten. Workers get
plain values (ClaimedJob, JobState), never database rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunery.ids import now
from tunery.storage.jobs import JobsRepo
from tunery.storage.orgs import OrgsRepo
from tunery.storage.tables import Job, Worker
from tunery.storage.workers import WorkersRepo

ALL_EVENTS = 1_000_000
FORGET_SILENT_WORKERS_SECONDS = 24 * 3600


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker holds the lease of: what it needs to validate or train it."""
    id: str
    organization_id: str
    organization_name: str
    model: str  # as asked for: a base model, or a fine-tuned model or checkpoint to continue
    base_model: str
    method: str  # a key of training.methods.METHODS
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    hyperparameters: dict[str, Any]  # as requested ("auto" or numbers)
    integrations: list[dict[str, Any]] | None
    classification: dict[str, Any] | None  # the legacy classification metrics' options
    taken_over_from: str | None = None  # the worker that held it until its lease ran out (it died)
    crashes: int = 0  # workers lost while holding it, this take-over included


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as `tunery workers` lists it."""
    id: str
    host: str
    pid: int
    device: str
    job_id: str | None
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True)
class JobState:
    status: str
    cancelling: bool  # a cancel was asked and waits for the worker


class JobQueue:
    def __init__(self, jobs: JobsRepo, orgs: OrgsRepo, workers: WorkersRepo, lease_seconds: float):
        self.jobs = jobs
        self.orgs = orgs
        self.workers = workers
        self.lease_seconds = lease_seconds

    # claiming --------------------------------------------------------------------------------------
    def claim_validation(self, worker_id: str, device: str | None = None) -> ClaimedJob | None:
        """The oldest job whose files wait for the model-specific checks (or whose validating
        worker went silent)."""
        return self._claimed(self.jobs.claim(("validating_files",), "validating_files", worker_id, self.lease_seconds,
                                             skip_device=self._other_device(device)))

    def claim_training(self, worker_id: str, device: str | None = None) -> ClaimedJob | None:
        """The oldest queued job, or a running one whose worker went silent (its lease ran out).
        A worker on `device` leaves the jobs that want another device to that device's workers
        while any is live (with none live, it takes them rather than let them wait forever)."""
        return self._claimed(self.jobs.claim(("queued", "running"), "running", worker_id, self.lease_seconds,
                                             skip_device=self._other_device(device)))

    def _other_device(self, device: str | None) -> str | None:
        if device is None:
            return None
        others = {w.device for w in self.workers.live(self.lease_seconds)} - {device}
        return next(iter(others)) if len(others) == 1 else None

    def _claimed(self, claimed: tuple[Job, str | None] | None) -> ClaimedJob | None:
        if claimed is None:
            return None
        row, previous = claimed
        return ClaimedJob(
            id=row.id, organization_id=row.organization_id, organization_name=self.orgs.get(row.organization_id).name,
            model=row.model, base_model=row.base_model, method=(row.method or {}).get("type", "supervised"),
            training_file=row.training_file, validation_file=row.validation_file, suffix=row.suffix, seed=row.seed,
            hyperparameters=dict(row.hyperparameters), integrations=row.integrations, classification=row.classification,
            taken_over_from=previous, crashes=row.crashes)

    # workers ---------------------------------------------------------------------------------------
    def worker_beat(self, worker_id: str, *, host: str, pid: int, device: str, job_id: str | None,
                    started_at: float) -> None:
        """The worker is alive (holding job_id, or none); rows of workers long silent (they died
        without saying so, on other machines) are dropped meanwhile."""
        self.workers.beat(worker_id, host=host, pid=pid, device=device, labels=[device], job_id=job_id,
                          started_at=started_at)
        self.workers.forget_silent(FORGET_SILENT_WORKERS_SECONDS)

    def worker_gone(self, worker_id: str) -> None:
        self.workers.remove(worker_id)

    def live_workers(self) -> list[WorkerInfo]:
        """Workers heard from within one lease, longest running first."""
        return [_info(row) for row in self.workers.live(self.lease_seconds)]

    def release_dead_local_workers(self, host: str, is_alive) -> int:
        """Jobs held by workers of this machine whose processes are gone (is_alive(pid) False) can
        be taken over now, not only when their leases run out; their rows go. Returns how many
        jobs were freed."""
        dead = [row.id for row in self.workers.on_host(host) if not is_alive(row.pid)]
        for worker_id in dead:
            self.workers.remove(worker_id)
        return self.jobs.expire_leases(dead)

    def heartbeat(self, job_id: str, worker_id: str, *, estimated_finish: int | None = None) -> bool:
        """Extend the lease; False when the job should stop (no longer this worker's, paused, or
        a cancel was asked)."""
        return self.jobs.heartbeat(job_id, worker_id, self.lease_seconds, estimated_finish=estimated_finish)

    def state(self, job_id: str, worker_id: str) -> JobState | None:
        """The job as it is now, while this worker holds it; None once it is not (or no more) its."""
        row = self.jobs.get(None, job_id)
        if row is None or row.worker_id != worker_id:
            return None
        return JobState(row.status, bool(row.cancel_requested) or row.status == "cancelled")

    # reporting -------------------------------------------------------------------------------------
    def event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
              data: dict[str, Any] | None = None, worker_id: str | None = None) -> bool:
        """Log an event on the job; with worker_id, only while that worker holds the job."""
        return self.jobs.add_event(job_id, message, level=level, type=type, data=data, only_if_worker=worker_id)

    def last_step(self, job_id: str) -> int | None:
        """The step of the job's newest metrics event: where its training got to."""
        return self.jobs.last_metrics_step(job_id)

    def logged_data(self, job_id: str) -> list[dict[str, Any]]:
        """The data of every event the job logged, oldest first."""
        return [event.data for event in reversed(self.jobs.events(job_id, limit=ALL_EVENTS)) if event.data]

    def result_files(self, job_id: str) -> list[str]:
        row = self.jobs.get(None, job_id)
        return list(row.result_files or []) if row is not None else []

    def record_result_file(self, job_id: str, worker_id: str, file_id: str) -> None:
        """The job's result file, recorded as soon as it is stored (one that takes the job over replaces it)."""
        self.jobs.update(job_id, only_if_worker=worker_id, result_files=[file_id])

    def record_hyperparameters(self, job_id: str, resolved: dict[str, Any]) -> None:
        """The numbers "auto" resolved to, shown on the job from then on."""
        self.jobs.update(job_id, hyperparameters=resolved)

    # letting go ------------------------------------------------------------------------------------
    # Each of these changes the job only while `worker_id` still holds it: a job cancelled or paused
    # meanwhile (the API let it go), or claimed by another worker after this one's lease ran out, is
    # left as it is.
    def validated(self, job_id: str, worker_id: str) -> None:
        """Files checked: the job queues for training."""
        if self.jobs.release(job_id, only_if_status="validating_files", only_if_worker=worker_id, status="queued"):
            self.event(job_id, "Files validated, moving job to queued state")

    def succeeded(self, job_id: str, worker_id: str, *, model_id: str, trained_tokens: int, result_file: str) -> None:
        if self.state(job_id, worker_id) is None:
            return
        self.event(job_id, "The job has successfully completed")
        self.jobs.release(job_id, only_if_worker=worker_id, status="succeeded", fine_tuned_model=model_id,
                          finished_at=now(), trained_tokens=trained_tokens, estimated_finish=None,
                          result_files=[result_file])

    def fail(self, job_id: str, worker_id: str, code: str, message: str, param: str | None = None) -> None:
        """The job ends failed with OpenAI's error object {code, message, param}."""
        if self.state(job_id, worker_id) is None:
            return
        self.event(job_id, message, level="error")
        self.jobs.release(job_id, only_if_worker=worker_id, status="failed", finished_at=now(), estimated_finish=None,
                          error={"code": code, "message": message, "param": param})

    def cancel(self, job_id: str, worker_id: str | None = None) -> None:
        """The job ends cancelled (its artefacts are its owner's to discard first); worker_id: only
        while that worker holds it."""
        if worker_id is not None and self.state(job_id, worker_id) is None:
            return
        self.event(job_id, "Fine-tuning job cancelled")
        self.jobs.release(job_id, only_if_worker=worker_id, status="cancelled", finished_at=now(),
                          estimated_finish=None, cancel_requested=True)

    def hand_back(self, job_id: str, worker_id: str, seen: JobState, step: int) -> bool:
        """A job stopped with a checkpoint at `step`: a paused one stays paused, a running one
        (its worker going away) queues to go on from there. False when the job changed since
        `seen` (a cancel arrived): look again."""
        status = "queued" if seen.status == "running" else seen.status
        if not self.jobs.release(job_id, only_if_status=seen.status, only_if_worker=worker_id,
                                 only_if_not_cancelling=True, status=status, estimated_finish=None):
            return False
        if status == "paused":
            self.event(job_id, f"Fine-tuning job paused at step {step}; resuming continues from there")
        elif seen.status == "running":
            self.event(job_id, f"The worker stopped at step {step}; the job is queued to go on from there", level="warn")
        return True


def _info(row: Worker) -> WorkerInfo:
    return WorkerInfo(id=row.id, host=row.host, pid=row.pid, device=row.device, job_id=row.job_id,
                      started_at=row.started_at, heartbeat_at=row.heartbeat_at)
