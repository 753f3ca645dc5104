"""Fine-tuning jobs: create (every parameter checked before anything is stored), list, retrieve,
cancel, pause, resume, events, checkpoints. The worker process does the rest through the queue
in the database: a job a worker holds is asked to stop (cancel_requested, or status paused) and
its worker acts on it within one step; a job nobody holds changes at once.

A paused job reads status "paused", as OpenAI's service reports it (the SDK's status Literal
does not list it, and the SDK does not validate responses, so clients see the string)."""

from __future__ import annotations

import re
import secrets
import threading
from pathlib import Path
from typing import Any

from tunery.config import WORKER_DEVICES
from tunery.errors import Conflict, InvalidRequest, NotFound, RateLimited, unknown_cursor
from tunery.ids import new_id, now
from tunery.integrations.wandb_run import IntegrationError, check_integrations
from tunery.protocol.files import FileReport
from tunery.protocol.fine_tuning import (
    CheckpointMetrics,
    CreateJobRequest,
    DpoHyperparameters,
    DpoMethod,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    Hyperparameters,
    JobError,
    Method,
)
from tunery.services.common import check_metadata
from tunery.services.models import ModelsService
from tunery.services.queue import JobQueue
from tunery.storage.files import FilesRepo
from tunery.storage.jobs import JobsRepo
from tunery.storage.tables import Job
from tunery.data.formats import Problem
from tunery.training.methods import METHODS, WRONG_FORMAT, format_problem

# A job's metadata may route it: {"tunery_device": "cuda"} goes to GPU workers while any is live.
DEVICE_METADATA = "tunery_device"
SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SEED = 2_147_483_647
HYPERPARAMETER_RANGES = {"n_epochs": (1, 50), "batch_size": (1, 256)}
MAX_BETA = 2.0  # DPO's beta: (0, 2], as OpenAI's API takes it
LEARNING_RATE_MULTIPLIER_RANGE = (1e-4, 100.0)  # beyond it a run diverges or never moves: surely a mistake
MAX_ACTIVE_JOBS = 20  # per organization: jobs validating, queued or running; more answers 429
FINISHED = {"succeeded", "failed", "cancelled"}
MAX_FILE_CHECKS = 2  # at once per server: each reads a file with a tokenizer and may train a few steps
MODEL_NOT_DOWNLOADED = "model_not_downloaded"  # a hub model a job can fetch, not here yet: its file is checked by the job


def to_object(row: Job) -> FineTuningJob:
    method_type = (row.method or {}).get("type", "supervised")
    if method_type == "dpo":  # the top-level (deprecated) field shows what both methods have
        method = Method(type="dpo", dpo=DpoMethod(hyperparameters=DpoHyperparameters(**row.hyperparameters)))
        hp = Hyperparameters(**{k: v for k, v in row.hyperparameters.items() if k != "beta"})
    else:
        hp = Hyperparameters(**row.hyperparameters)
        method = Method(type="supervised", supervised={"hyperparameters": hp}) if row.method else None
    return FineTuningJob(
        id=row.id, created_at=row.created_at, error=JobError(**row.error) if row.error else None,
        fine_tuned_model=row.fine_tuned_model, finished_at=row.finished_at, hyperparameters=hp, model=row.model,
        organization_id=row.organization_id, result_files=row.result_files or [], seed=row.seed, status=row.status,
        trained_tokens=row.trained_tokens, training_file=row.training_file, validation_file=row.validation_file,
        estimated_finish=row.estimated_finish, integrations=row.integrations, metadata=row.metadata_, method=method,
        user_provided_suffix=row.suffix,
    )


class JobsService:
    def __init__(self, repo: JobsRepo, files: FilesRepo, models: ModelsService, queue: JobQueue,
                 device: str = "auto"):
        self.repo = repo
        self.files = files
        self.models = models
        self.queue = queue
        self.device = device  # where a file check measures the training speed
        self._checking = threading.BoundedSemaphore(MAX_FILE_CHECKS)

    def create(self, org_id: str, request: CreateJobRequest) -> FineTuningJob:
        # NotFound for unknown or foreign models; a hub model not cached yet is downloaded by the job.
        parent = self.models.resolve(org_id, request.model, downloadable=True)
        for param in ("training_file", "validation_file"):
            file_id = getattr(request, param)
            if file_id is None:
                continue
            row = self.files.get(org_id, file_id)
            if row is None:
                raise InvalidRequest(f"File {file_id} does not exist.", param=param, code="invalid_file")
            if row.purpose != "fine-tune":
                raise InvalidRequest(f"File {file_id} has purpose {row.purpose!r}, not 'fine-tune'.", param=param)
        if request.suffix is not None and not SUFFIX_PATTERN.match(request.suffix):
            raise InvalidRequest(f"suffix must be 1-64 characters of letters, digits, '-' and '_'; {request.suffix[:70]!r} "
                                 "is not.", param="suffix")
        if request.seed is not None and not 0 <= request.seed <= MAX_SEED:
            raise InvalidRequest(f"seed must be between 0 and {MAX_SEED}.", param="seed")
        check_metadata(request.metadata)
        if self.repo.count_active(org_id) >= MAX_ACTIVE_JOBS:
            raise RateLimited(f"This organization already has {MAX_ACTIVE_JOBS} jobs validating, queued or running; "
                              "wait for one to finish.", code="rate_limit_exceeded")
        try:
            check_integrations(request.integrations)
        except IntegrationError as exc:
            raise InvalidRequest(str(exc), param="integrations") from None
        hyperparameters = _requested_hyperparameters(request)
        if parent.training_type is not None:  # continuing a fine-tuned model: in kind, by default
            if hyperparameters["training_type"] is None:
                hyperparameters["training_type"] = parent.training_type
            elif parent.training_type == "full" and hyperparameters["training_type"] == "lora":
                raise InvalidRequest(f"{request.model} was fully fine-tuned; continue it with training_type 'full'.",
                                     param="hyperparameters.training_type")
        hyperparameters["training_type"] = hyperparameters["training_type"] or "lora"
        classification = _classification(request)
        device = (request.metadata or {}).get(DEVICE_METADATA)
        if device is not None and device not in WORKER_DEVICES:
            raise InvalidRequest(f"metadata {DEVICE_METADATA} names the workers a job goes to: one of "
                                 f"{', '.join(WORKER_DEVICES)}, not {device!r}.", param=f"metadata.{DEVICE_METADATA}")
        job = Job(
            id=new_id("ftjob"), organization_id=org_id, model=request.model, base_model=parent.base_name,
            training_file=request.training_file, validation_file=request.validation_file, suffix=request.suffix,
            seed=request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1),
            status="validating_files", hyperparameters=hyperparameters,
            method={"type": request.method.type if request.method else "supervised"}, metadata_=request.metadata, integrations=request.integrations,
            result_files=[], created_at=now(), classification=classification, device=device,
        )
        self.repo.add(job)
        self.repo.add_event(job.id, f"Created fine-tuning job: {job.id}")
        return to_object(job)

    def check_file(self, org_id: str, model: str | None, path: Path, method: str | None = None) -> FileReport:
        """A training file checked against the base model a job from `model` would train, as the
        job would check it (for `method`, supervised by default), with the auto epochs, the billed
        tokens and the training time measured on this server."""
        if not model:
            raise InvalidRequest("Name the model the file is for.", param="model")
        method = method or "supervised"
        if method not in METHODS:
            raise InvalidRequest(f"Unknown fine-tuning method {method!r}; use one of {sorted(METHODS)}.", param="method")
        base = self.models.resolve(org_id, model, downloadable=True).base_name
        if not self.models.catalog.exists(base):
            raise NotFound(f"The model '{model}' is not on this server yet: a job from it downloads it first, then "
                           f"checks the file (`tunery models pull {self.models.catalog.target(base)}` on the server "
                           "fetches it now).", param="model", code=MODEL_NOT_DOWNLOADED)
        if not self._checking.acquire(blocking=False):
            raise RateLimited(f"{MAX_FILE_CHECKS} files are being checked already; try again in a moment.",
                              code="rate_limit_exceeded")
        try:
            checked = self.models.catalog.check_file(base, path, measure=True, device=self.device)
        finally:
            self._checking.release()
        if wrong := format_problem(method, checked.report.format):
            checked.report.error(Problem(0, WRONG_FORMAT, f"The file holds {wrong}."))
        return FileReport(**checked.as_dict(base))

    def retrieve(self, org_id: str, job_id: str) -> FineTuningJob:
        return to_object(self._row(org_id, job_id))

    def list(self, org_id: str, *, limit: int, after: str | None, metadata: dict[str, str] | None = None,
             status: str | None = None) -> tuple[list[FineTuningJob], bool]:
        if after is not None and self.repo.get(org_id, after) is None:
            raise unknown_cursor("FineTuningJob", after)
        rows = self.repo.list(org_id, limit=limit + 1, after=after, metadata=metadata, status=status)
        return [to_object(r) for r in rows[:limit]], len(rows) > limit

    def cancel(self, org_id: str, job_id: str) -> FineTuningJob:
        row = self._row(org_id, job_id)
        if row.status in FINISHED:
            raise Conflict(f"Job {job_id} is {row.status} and cannot be cancelled.", param="fine_tuning_job_id")
        # A validating worker writes nothing and leaves a cancelled job as it is; a training one
        # owns checkpoints, so it is asked, and drops them as it stops.
        held = row.worker_id is not None and row.status != "validating_files"
        if not (held and self.repo.update(job_id, only_if_held=True, cancel_requested=True)):
            self.models.discard_job_artefacts(job_id)  # a paused job's checkpoints
            self.queue.cancel(job_id)
        return to_object(self._row(org_id, job_id))

    def pause(self, org_id: str, job_id: str) -> FineTuningJob:
        """A job validating or queued pauses at once; a running one after its current step, once
        its worker has saved a checkpoint to resume from. Pausing a paused job changes nothing."""
        while (row := self._row(org_id, job_id)).status != "paused":
            if row.status in FINISHED:
                raise Conflict(f"Job {job_id} is {row.status} and cannot be paused.", param="fine_tuning_job_id")
            if row.cancel_requested:
                raise Conflict(f"Job {job_id} is being cancelled.", param="fine_tuning_job_id")
            if row.status == "validating_files":  # its validator writes nothing: it is let go, as on cancel
                paused = self.repo.release(job_id, only_if_status=row.status, status="paused",
                                           resume_status="validating_files")
            else:
                paused = self.repo.update(job_id, only_if_status=row.status, only_if_not_cancelling=True,
                                          status="paused", resume_status="queued", estimated_finish=None)
            if paused and (row.worker_id is None or row.status == "validating_files"):
                self.repo.add_event(job_id, "Fine-tuning job paused")  # else its worker says so once stopped
        return to_object(row)

    def resume(self, org_id: str, job_id: str) -> FineTuningJob:
        """Back where it was paused: training goes on from the job's latest checkpoint."""
        row = self._row(org_id, job_id)
        back_to = row.resume_status or "queued"
        if row.status != "paused" or not self.repo.update(job_id, only_if_status="paused", status=back_to):
            raise Conflict(f"Job {job_id} is {self._row(org_id, job_id).status}, not paused; only a paused job "
                           "can be resumed.", param="fine_tuning_job_id")
        self.repo.add_event(job_id, "Fine-tuning job resumed")
        return to_object(self._row(org_id, job_id))

    def events(self, org_id: str, job_id: str, *, limit: int, after: str | None) -> tuple[list[FineTuningJobEvent], bool]:
        self._row(org_id, job_id)
        if after is not None and self.repo.event(job_id, after) is None:
            raise unknown_cursor("FineTuningJobEvent", after)
        rows = self.repo.events(job_id, limit=limit + 1, after=after)
        events = [FineTuningJobEvent(id=e.id, created_at=e.created_at, level=e.level, message=e.message,
                                     data=e.data, type=e.type) for e in rows[:limit]]
        return events, len(rows) > limit

    def checkpoints(self, org_id: str, job_id: str, *, limit: int, after: str | None) -> tuple[list[FineTuningJobCheckpoint], bool]:
        self._row(org_id, job_id)
        if after is not None and self.models.repo.job_checkpoint(job_id, after) is None:
            raise unknown_cursor("FineTuningJobCheckpoint", after)
        rows = self.models.repo.checkpoints(job_id, limit=limit + 1, after=after)
        checkpoints = [FineTuningJobCheckpoint(
            id=r.id, created_at=r.created_at, fine_tuned_model_checkpoint=r.model_id, fine_tuning_job_id=job_id,
            metrics=CheckpointMetrics(**{k: v for k, v in r.metrics.items() if k in CheckpointMetrics.model_fields}),
            step_number=r.step_number) for r in rows[:limit]]
        return checkpoints, len(rows) > limit

    def _row(self, org_id: str, job_id: str) -> Job:
        row = self.repo.get(org_id, job_id)
        if row is None:
            raise NotFound(f"Fine-tuning job {job_id} not found.", param="fine_tuning_job_id")
        return row


def _requested_hyperparameters(request: CreateJobRequest) -> dict[str, Any]:
    """The method's hyperparameters, checked: `method.dpo.hyperparameters` for DPO; for supervised
    jobs the top-level `hyperparameters` (deprecated) or `method.supervised.hyperparameters`.
    Errors name the field where it was given."""
    method = request.method
    if method is not None and method.type not in METHODS:
        raise InvalidRequest(f"Fine-tuning method {method.type!r} is not available yet; use one of "
                             f"{sorted(METHODS)}.", param="method.type")
    method_type = method.type if method is not None else "supervised"
    for other in ("supervised", "dpo", "reinforcement"):
        if other != method_type and method is not None and getattr(method, other) is not None:
            raise InvalidRequest(f"method.{other} configures {other} fine-tuning; this job's method.type is "
                                 f"{method_type!r}.", param=f"method.{other}")
    given = request.hyperparameters
    prefix = "hyperparameters."
    if method_type == "dpo":
        if given is not None:
            raise InvalidRequest("The top-level hyperparameters are supervised fine-tuning's (and deprecated); give a "
                                 "DPO job's in method.dpo.hyperparameters.", param="hyperparameters")
        given = method.dpo.hyperparameters if method.dpo is not None else None
        prefix = "method.dpo.hyperparameters."
    elif method is not None and method.supervised is not None and method.supervised.hyperparameters is not None:
        if given is not None and given != method.supervised.hyperparameters:
            raise InvalidRequest("hyperparameters and method.supervised.hyperparameters disagree; give them in "
                                 "method.supervised.hyperparameters only (the top-level field is deprecated).",
                                 param="hyperparameters")
        given = method.supervised.hyperparameters
    values = given.model_dump() if given is not None else {}
    for key, (low, high) in HYPERPARAMETER_RANGES.items():
        value = values.get(key)
        if value not in (None, "auto") and not low <= value <= high:
            raise InvalidRequest(f"{key} must be between {low} and {high}, or 'auto'.", param=prefix + key)
    multiplier = values.get("learning_rate_multiplier")
    low, high = LEARNING_RATE_MULTIPLIER_RANGE
    if multiplier not in (None, "auto") and not low <= multiplier <= high:  # NaN and infinities fail this too
        raise InvalidRequest(f"learning_rate_multiplier must be between {low:g} and {high:g}, or 'auto'.",
                             param=prefix + "learning_rate_multiplier")
    requested = {k: values.get(k) or "auto" for k in ("n_epochs", "batch_size", "learning_rate_multiplier")}
    requested["training_type"] = values.get("training_type")
    if method_type == "dpo":
        beta = values.get("beta")
        if beta not in (None, "auto") and not 0 < beta <= MAX_BETA:  # NaN fails this too
            raise InvalidRequest(f"beta must be greater than 0 and at most {MAX_BETA:g}, or 'auto'.",
                                 param=prefix + "beta")
        return requested | {"beta": beta if beta is not None else "auto"}
    weight = values.get("prompt_loss_weight")
    if weight is not None and not 0 <= weight <= 1:
        raise InvalidRequest("prompt_loss_weight must be between 0 and 1.", param=prefix + "prompt_loss_weight")
    return requested | {"prompt_loss_weight": weight}


def _classification(request: CreateJobRequest) -> dict[str, Any] | None:
    """The legacy classification options, checked as the legacy API did."""
    if not request.compute_classification_metrics:
        return None
    if request.method is not None and request.method.type != "supervised":
        raise InvalidRequest("compute_classification_metrics is for supervised fine-tuning on prompt/completion data.",
                             param="compute_classification_metrics")
    if request.validation_file is None:
        raise InvalidRequest("compute_classification_metrics needs a validation_file.", param="validation_file")
    n_classes, positive = request.classification_n_classes, request.classification_positive_class
    if positive is None and (n_classes is None or n_classes < 2):
        raise InvalidRequest("Set classification_n_classes (2 or more) for multiclass classification, or "
                             "classification_positive_class for binary classification.", param="classification_n_classes")
    if positive is not None and n_classes not in (None, 2):
        raise InvalidRequest("classification_positive_class is for binary classification (2 classes).",
                             param="classification_positive_class")
    betas = request.classification_betas or [1.0]
    if any(beta <= 0 for beta in betas) or (request.classification_betas and positive is None):
        raise InvalidRequest("classification_betas are positive numbers, for binary classification.",
                             param="classification_betas")
    return {"n_classes": 2 if positive is not None else n_classes, "positive_class": positive, "betas": betas}
