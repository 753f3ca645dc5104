"""The worker: claims jobs from the database with a lease, validates their files, runs the
training recipe, reports events and publishes the fine-tuned model. Runs as its own process
(`tunery worker`, or beside the API under `tunery serve`)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path

from tunery.catalog import EMBEDDED_MODEL, Catalog
from tunery.config import Settings
from tunery.data.formats import TOO_LONG
from tunery.data.stats import token_stats
from tunery.data.validate import Report, finish_report, load_examples
from tunery.ids import new_id, now
from tunery.integrations.wandb_run import WandbRuns
from tunery.services.models import ModelsService
from tunery.storage import BlobStore, Database
from tunery.storage.files import FilesRepo
from tunery.storage.jobs import JobsRepo
from tunery.storage.models import ModelsRepo
from tunery.storage.orgs import OrgsRepo
from tunery.storage.tables import Checkpoint, File, FineTunedModel, Job
from tunery.training.hyperparameters import resolve
from tunery.training import classification
from tunery.training.checkpoints import TRAINER_STATE, read_manifest
from tunery.training.classification import PREFIX, ClassificationError, ClassificationSpec
from tunery.training.results import RESULTS_FILENAME, results_csv
from tunery.training.sft import SFTConfig, SFTRecipe, SFTResult, StepMetrics

log = logging.getLogger(__name__)
MODEL_ID_LENGTH = 8  # the last field of ft:BASE:ORG:SUFFIX:ID, taken from the job id's end
KEPT_CHECKPOINTS = 3  # as OpenAI: the last three epochs' checkpoints


class JobFailed(Exception):
    """A failure to report on the job: error {code, message, param}."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class Worker:
    def __init__(self, settings: Settings, *, parent_pid: int | None = None):
        """parent_pid: exit (handing any job back to the queue) once that process is gone, as
        the worker of `tunery serve` does when the server stops, however it stops."""
        self.settings = settings
        self.parent_pid = parent_pid
        self.db = Database(settings.database_url)
        self.db.create_schema()
        self.blobs = BlobStore(settings.data_dir)
        self.catalog = Catalog(self.blobs)
        self.jobs = JobsRepo(self.db)
        self.files = FilesRepo(self.db)
        self.models = ModelsRepo(self.db)
        self.orgs = OrgsRepo(self.db)
        self.model_service = ModelsService(self.catalog, self.models)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def warm_up(self) -> None:
        """Convert the embedded base model now, so that the first job does not wait for it."""
        if self.settings.warm_up and self.catalog.exists(EMBEDDED_MODEL):
            self.catalog.path(EMBEDDED_MODEL)

    def run_forever(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        log.info("worker %s waiting for jobs", self.worker_id)
        while not stop.is_set() and self._parent_alive():
            if not self.run_once():
                stop.wait(self.settings.worker_poll_seconds)

    def run_once(self) -> bool:
        """Validate one job's files, or else train one job; False when there was nothing to do."""
        lease = self.settings.job_lease_seconds
        if job := self.jobs.claim(("validating_files",), "validating_files", self.worker_id, lease):
            self._guarded(job, self._validate)
            return True
        if job := self.jobs.claim(("queued", "running"), "running", self.worker_id, lease):
            self._guarded(job, self._train)
            return True
        return False

    def _guarded(self, job: Job, step) -> None:
        try:
            step(job)
        except JobFailed as exc:
            self._fail(job, exc.code, exc.message, exc.param)
        except Exception as exc:  # a fault of ours: fail the job, keep the worker alive
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self._fail(job, "server_error", f"The job failed because of an internal error: {exc}")

    def _fail(self, job: Job, code: str, message: str, param: str | None = None) -> None:
        self.jobs.add_event(job.id, message, level="error")
        self.jobs.release(job.id, status="failed", finished_at=now(), estimated_finish=None,
                          error={"code": code, "message": message, "param": param})

    # validating_files -> queued ----------------------------------------------------------------
    def _validate(self, job: Job) -> None:
        """The model-specific checks: every example renders with the base model's template and
        keeps something to train on within its context; truncated examples are warned about."""
        tokenizer = self.catalog.tokenizer(job.base_model)
        context = self.catalog.context_length(job.base_model)
        for param, file_id in (("training_file", job.training_file), ("validation_file", job.validation_file)):
            if file_id is None:
                continue
            label = param.replace("_", " ")
            self.jobs.add_event(job.id, f"Validating {label}: {file_id}")
            if self.files.get(job.organization_id, file_id) is None:
                raise JobFailed("invalid_training_file", f"File {file_id} no longer exists.", param)
            report = Report()
            stats = token_stats(self.blobs.file_path(file_id), tokenizer, context, report)
            finish_report(report)
            if job.classification and report.format != "prompt_completion":
                raise JobFailed("invalid_training_file", f"Classification metrics need prompt/completion data; the "
                                f"{label} {file_id} holds {report.format} examples.", param)
            if report.format == "preference":
                raise JobFailed("invalid_training_file", f"The {label} {file_id} holds preference (DPO) data; "
                                "supervised fine-tuning needs chat or prompt/completion examples.", param)
            if not report.ok:
                raise JobFailed("invalid_training_file", f"The {label} {file_id} is invalid: {report.errors[0]}", param)
            if stats.too_long:
                first = next(w for w in report.warnings if w.code == TOO_LONG)
                self.jobs.add_event(job.id, f"{stats.too_long} examples of the {label} are longer than the model's "
                                    f"context of {context} tokens and will be truncated (first: {first})", level="warn")
        # Cancelled while we validated: the job stays cancelled.
        if self.jobs.release(job.id, only_if_status="validating_files", status="queued"):
            self.jobs.add_event(job.id, "Files validated, moving job to queued state")

    # queued -> running -> succeeded | cancelled --------------------------------------------------
    def _train(self, job: Job) -> None:
        resume_from = self._resume_point(job)
        if resume_from is None:
            self.jobs.add_event(job.id, "Fine-tuning job started")
        else:
            self.jobs.add_event(job.id, f"Fine-tuning job continues from its checkpoint at step {resume_from[1]}")
        examples = load_examples(self.blobs.file_path(job.training_file))
        valid = load_examples(self.blobs.file_path(job.validation_file)) if job.validation_file else None
        hp = resolve(job.hyperparameters, len(examples), self.catalog.parameter_count(job.base_model))
        self.jobs.update(job.id, hyperparameters=hp.as_api())
        start = self.model_service.resolve(job.organization_id, job.model)
        adapter = start.adapter_path if start.training_type == "lora" else None
        weights = start.adapter_path if start.training_type == "full" else start.base_path
        recipe = SFTRecipe(SFTConfig(
            base_model=str(weights), init_adapter=str(adapter) if adapter else None, n_epochs=hp.n_epochs,
            batch_size=hp.batch_size, learning_rate=hp.learning_rate, training_type=hp.training_type, seed=job.seed,
            prompt_loss_weight=hp.prompt_loss_weight, device=self.settings.device,
            resume_from=str(resume_from[0]) if resume_from else None,
        ))
        model_id = self._model_id(job)
        classify = self._classification(job, examples, valid)
        wandb = WandbRuns(job.id, job.base_model, job.integrations, {
            "hyperparameters": hp.as_api(), "learning_rate": hp.learning_rate, "model": job.model,
            "base_model": job.base_model, "training_file": job.training_file, "validation_file": job.validation_file,
            "suffix": job.suffix, "seed": job.seed, "training_examples": len(examples)},
            self.blobs.integration_dir("wandb"), resume=resume_from is not None)
        # step -> classification metrics, for the result CSV (a resumed job's earlier ones from its events)
        epoch_metrics = self._classification_metrics(job, resume_from[1]) if resume_from else {}
        started, first_step = time.time(), resume_from[1] if resume_from else 0

        def on_step(m: StepMetrics) -> bool:
            self.jobs.add_event(job.id, _step_message(m), type="metrics", data=m.as_data())
            wandb.log(m.as_data(), step=m.step)
            per_step = (time.time() - started) / (m.step - first_step)
            finish = int(time.time() + per_step * (m.total_steps - m.step))
            return self._parent_alive() and self.jobs.heartbeat(
                job.id, self.worker_id, self.settings.job_lease_seconds, estimated_finish=finish)

        def on_epoch_end(m: StepMetrics) -> None:
            if classify is not None:
                epoch_metrics[m.step] = classify(recipe)
                shown = ", ".join(f"{k.removeprefix(PREFIX)}={v:.3f}" for k, v in epoch_metrics[m.step].items())
                # A message, not a metrics event: clients read train_loss from every metrics event.
                self.jobs.add_event(job.id, f"Classification metrics at step {m.step}: {shown}",
                                    data={"step": m.step, **epoch_metrics[m.step]})
                wandb.log(epoch_metrics[m.step], step=m.step)
            self._save_checkpoint(job, recipe, m, model_id)

        try:
            recipe.setup(examples, valid)
            result = recipe.train(on_step, on_epoch_end)
            if result.stopped:
                self._stop(job, lambda: self._save_checkpoint(job, recipe, result.history[-1], model_id))
                return
            self._publish(job, result, model_id, hp.training_type, epoch_metrics,
                          before_done=lambda: wandb.finish({"fine_tuned_model": model_id}))
        finally:
            recipe.cleanup()
            wandb.finish(exit_code=1)  # runs still open here ended without a model

    def _model_id(self, job: Job) -> str:
        org = self.orgs.get(job.organization_id)
        return f"ft:{job.base_model}:{org.name}:{job.suffix or ''}:{job.id[-MODEL_ID_LENGTH:]}"

    def _save_checkpoint(self, job: Job, recipe: SFTRecipe, m: StepMetrics, model_id: str) -> None:
        """Written aside and renamed into place; only the last KEPT_CHECKPOINTS stay, and only the
        newest keeps the trainer state (what resuming needs). A step has one checkpoint: a job
        paused at an epoch's end keeps that epoch's."""
        newest = self.models.checkpoints(job.id, limit=1)
        if newest and newest[0].step_number == m.step:
            return
        with self.blobs.staging_dir() as staged:
            recipe.save_checkpoint(staged, m)
            self.blobs.publish_dir(staged, self.blobs.checkpoint_dir(job.id, m.step))
        self.models.add_checkpoint(Checkpoint(
            id=new_id("ftckpt"), model_id=f"{model_id}:ckpt-step-{m.step}", job_id=job.id, base_model=job.base_model,
            organization_id=job.organization_id, step_number=m.step, metrics=m.as_data(), created_at=now()))
        older = self.models.checkpoints(job.id)[1:]
        for row in older:
            (self.blobs.checkpoint_dir(job.id, row.step_number) / TRAINER_STATE).unlink(missing_ok=True)
        dropped = older[KEPT_CHECKPOINTS - 1:]
        self.models.delete_checkpoints([row.id for row in dropped])
        for row in dropped:
            self.blobs.delete_dir(self.blobs.checkpoint_dir(job.id, row.step_number))
        self.jobs.add_event(job.id, f"Checkpoint created at step {m.step}")

    def _stop(self, job: Job, save_checkpoint) -> None:
        """Training stopped before its end. Cancelled: its checkpoints go too. Paused, resumed
        meanwhile, or this worker going away: a checkpoint of this step is saved to go on from,
        and the job stays paused or goes back to the queue. Another worker took the job over
        after our lease ran out: it is theirs, and nothing is touched."""
        saved = False
        while (current := self.jobs.get(None, job.id)) is not None and current.worker_id == self.worker_id:
            if current.cancel_requested or current.status == "cancelled":
                self.model_service.discard_job_artefacts(job.id)
                self.jobs.add_event(job.id, "Fine-tuning job cancelled")
                self.jobs.release(job.id, status="cancelled", finished_at=now(), estimated_finish=None)
                return
            if not saved:
                save_checkpoint()
                saved = True
                continue  # the job may have changed while the checkpoint was written
            status = "queued" if current.status == "running" else current.status
            if self.jobs.release(job.id, only_if_status=current.status, only_if_not_cancelling=True,
                                 status=status, estimated_finish=None):
                step = self.models.checkpoints(job.id, limit=1)[0].step_number
                if status == "paused":
                    self.jobs.add_event(job.id, f"Fine-tuning job paused at step {step}; resuming continues from there")
                elif current.status == "running":
                    self.jobs.add_event(job.id, f"The worker stopped at step {step}; the job is queued to go on "
                                        "from there", level="warn")
                return

    def _resume_point(self, job: Job) -> tuple[Path, int] | None:
        """The newest checkpoint's folder and step when it holds the trainer state to go on from;
        otherwise whatever checkpoints there are go, and the job starts over."""
        newest = self.models.checkpoints(job.id, limit=1)
        if newest:
            folder = self.blobs.checkpoint_dir(job.id, newest[0].step_number)
            try:
                read_manifest(folder)
                if (folder / TRAINER_STATE).exists():
                    return folder, newest[0].step_number
            except ValueError:
                pass
            self.model_service.discard_job_artefacts(job.id)
        return None

    def _classification_metrics(self, job: Job, up_to_step: int) -> dict[int, dict]:
        """The classification metrics a job logged before it stopped, by step."""
        found = {}
        for event in self.jobs.events(job.id, limit=1_000_000):
            data = event.data or {}
            if any(key.startswith(PREFIX) for key in data) and data.get("step", up_to_step + 1) <= up_to_step:
                found[data["step"]] = {k: v for k, v in data.items() if k.startswith(PREFIX)}
        return found

    def _parent_alive(self) -> bool:
        return self.parent_pid is None or os.getppid() == self.parent_pid

    def _classification(self, job: Job, examples: list[dict], valid: list[dict] | None):
        """The epoch-end scorer of a job that asked for classification metrics, or None."""
        if not job.classification:
            return None
        options = job.classification
        classes = sorted({e["completion"] for e in examples})
        spec = ClassificationSpec(options.get("n_classes"), options.get("positive_class"), options.get("betas") or [1.0])
        if spec.positive_class is not None and (len(classes) != 2 or spec.positive_class not in classes):
            raise JobFailed("invalid_training_file", f"classification_positive_class {spec.positive_class!r} must be "
                            f"one of exactly two completions; the training file has {classes[:10]}",
                            "classification_positive_class")
        try:
            classification.first_tokens(self.catalog.tokenizer(job.base_model), classes)
        except ClassificationError as exc:
            raise JobFailed("invalid_training_file", f"Classification metrics: {exc}; the completions are "
                            f"{classes[:10]}", "compute_classification_metrics") from None
        return lambda recipe: classification.evaluate(recipe, valid, classes, spec)

    def _publish(self, job: Job, result: SFTResult, model_id: str, training_type: str,
                 epoch_metrics: dict[int, dict], before_done=lambda: None) -> None:
        """The model is the last checkpoint (hard-linked, without its trainer state), and the
        step metrics become the job's result file."""
        last = self.models.checkpoints(job.id, limit=1)[0]
        self.blobs.link_copy(self.blobs.checkpoint_dir(job.id, last.step_number), self.blobs.model_dir(job.id),
                             skip=(TRAINER_STATE,))
        results = File(id=new_id("file"), organization_id=job.organization_id, filename=RESULTS_FILENAME,
                       purpose="fine-tune-results", bytes=0, created_at=now(), status="processed")
        results.bytes = self.blobs.write_file(results.id, [results_csv(result.history, epoch_metrics)])
        self.files.add(results)
        org = self.orgs.get(job.organization_id)
        self.models.add(FineTunedModel(id=model_id, organization_id=org.id, organization_name=org.name,
                                       base_model=job.base_model, job_id=job.id, training_type=training_type,
                                       created_at=now()))
        self.jobs.add_event(job.id, f"New fine-tuned model created: {model_id}")
        before_done()  # what the job's integrations write is complete when it reads succeeded
        self.jobs.add_event(job.id, "The job has successfully completed")
        self.jobs.release(job.id, status="succeeded", fine_tuned_model=model_id, finished_at=now(),
                          trained_tokens=result.trained_tokens, estimated_finish=None, result_files=[results.id])


def _step_message(m: StepMetrics) -> str:
    """The guide's wording: "Step 3/30: training loss=1.52", with validation losses when known."""
    message = f"Step {m.step}/{m.total_steps}: training loss={m.train_loss:.2f}"
    if m.valid_loss is not None:
        message += f", validation loss={m.valid_loss:.2f}"
    if m.full_valid_loss is not None:
        message += f", full validation loss={m.full_valid_loss:.2f}"
    return message
