"""The worker orchestrates a job's life, from claim to release: it claims a job from the queue,
checks its files against the base model, trains it with its method's recipe (an event and a
heartbeat every step, a checkpoint every epoch), and publishes the fine-tuned model with its
result file; or it stops early and hands the job back (paused, cancelled, or queued to go on
from its checkpoint). What is stored, and how, is the services' business. Runs as its own
process (`tunery worker`, or beside the API under `tunery serve`), built from the API's container."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tunery import failpoints
from tunery.catalog import EMBEDDED_MODEL, UnknownModel
from tunery.data.formats import TOO_LONG
from tunery.data.validate import load_examples
from tunery.devices import worker_devices
from tunery.errors import NotFound
from tunery.hub import HubError
from tunery.integrations.wandb_run import WandbRuns
from tunery.services.container import Container
from tunery.services.models import JobOutput
from tunery.services.queue import ClaimedJob
from tunery.training import classification, distributed
from tunery.training.distributed import RankLost
from tunery.training.methods import METHODS, Metrics, Recipe, RecipeInputs, TrainingMethod, format_problem
from tunery.training.results import RESULTS_FILENAME

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """A failure to report on the job: error {code, message, param}."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


class LeaseLost(Exception):
    """Another worker took the job over (this one was silent past its lease): touch nothing of it."""


class Worker:
    def __init__(self, container: Container, *, parent_pid: int | None = None):
        """parent_pid: exit (handing any job back to the queue) once that process is gone, as
        the worker of `tunery serve` does when the server stops, however it stops."""
        self.container = container
        self.settings = container.settings
        self.queue, self.models, self.files, self.catalog = container.queue, container.models, container.files, container.catalog
        self.parent_pid = parent_pid
        self.host = socket.gethostname()
        self.worker_id = f"{self.host[:48]}:{os.getpid()}"  # fits jobs.worker_id
        # One process per device for each job (TUNERY_WORKER_DEVICES; one unless set)
        self.devices = worker_devices(self.settings.worker_devices, self.settings.device)
        self.device = self.settings.worker_device or self.devices[0].type
        self.started_at = time.time()
        self.stopping = threading.Event()  # set by stop(): the current job hands back at its next step
        self._job: ClaimedJob | None = None  # the job held now, for the heartbeat thread

    def warm_up(self) -> None:
        """Load the training libraries and convert the embedded base model now, before any job is
        claimed, so that the first job waits for neither."""
        _import_training_libraries()
        if self.settings.warm_up and self.catalog.exists(EMBEDDED_MODEL):
            self.catalog.path(EMBEDDED_MODEL)

    def stop(self) -> None:
        """Stop soon: the job in hand stops at its next step, is checkpointed and handed back."""
        self.stopping.set()

    def run_forever(self) -> None:
        if self.settings.node_rank > 0:  # another machine's ranks for the first machine's runs; it claims nothing
            log.info("worker %s (%s) is machine %d of %d: joining the runs of the first at %s", self.worker_id,
                     self.device, self.settings.node_rank, self.settings.nodes, self.settings.rendezvous)
            distributed.join_runs([str(d) for d in self.devices], self.settings.nodes, self.settings.node_rank,
                                  self.settings.rendezvous, self.stopping, log)
            return
        log.info("worker %s (%s) waiting for jobs", self.worker_id, self.device)
        beating = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
        beating.start()
        try:
            while not self.stopping.is_set() and self._parent_alive():
                if not self.run_once():
                    self.stopping.wait(self.settings.worker_poll_seconds)
        finally:
            self.stopping.set()
            beating.join()
            try:
                self.queue.worker_gone(self.worker_id)
            except Exception as exc:  # the database went first: `tunery workers` no longer lists it a lease later
                log.warning("could not remove this worker's row: %s", exc)

    def run_once(self) -> bool:
        """Validate one job's files, or else train one job, or else execute one eval run; False
        when there was nothing to do."""
        # A worker of this machine that died (killed, out of memory) frees its job at once.
        self.queue.release_dead_local_workers(self.host, _process_alive)
        if job := self.queue.claim_validation(self.worker_id, self.device):
            self._guarded(job, self._validate)
            return True
        if job := self.queue.claim_training(self.worker_id, self.device):
            self._guarded(job, self._train)
            return True
        from tunery.jobs import evals  # eval runs come after training (jobs/evals.py executes them)

        return evals.run_next(self.container, self.worker_id, self.stopping)

    def _beat_forever(self) -> None:
        """The worker's heartbeat, from its own thread every few seconds whatever the job is doing
        (a model load, validation, a long step): its row in the workers table and its job's lease."""
        while True:
            job = self._job
            try:
                self._report(job)
                if job is not None:
                    self.queue.heartbeat(job.id, self.worker_id)
            except Exception as exc:  # the database unreachable for a moment: the next beat tries again
                log.warning("heartbeat failed: %s", exc)
            if not self._parent_alive():
                self.stopping.set()  # serve is gone: the job in hand stops at its next step or piece of work
            if self.stopping.wait(self.settings.worker_heartbeat_seconds):
                return

    def _report(self, job: ClaimedJob | None) -> None:
        """This worker's row in the workers table: alive, holding `job`."""
        self.queue.worker_beat(self.worker_id, host=self.host, pid=os.getpid(), device=self.device,
                               job_id=job.id if job else None, started_at=self.started_at)

    def _guarded(self, job: ClaimedJob, step: Callable[[ClaimedJob], None]) -> None:
        self._job = job
        try:
            self._report(job)  # `tunery workers` shows the job from now, not from the next beat
            if job.taken_over_from is not None and not self._take_over(job):
                return
            step(job)
        except LeaseLost:
            log.warning("job %s was taken over by another worker; this one stopped without writing", job.id)
        except RankLost as exc:  # as when a worker dies: its lease runs out, and the job is taken over
            log.warning("job %s: %s", job.id, exc)
            self._event(job, f"{str(exc)[:1].upper()}{str(exc)[1:]}; the job goes on from its last checkpoint once "
                             f"its lease runs out ({self.settings.job_lease_seconds:g} s)", level="warn")
        except JobFailed as exc:
            self.queue.fail(job.id, self.worker_id, exc.code, exc.message, exc.param)
        except Exception as exc:  # a fault of ours: fail the job, keep the worker alive
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            self.queue.fail(job.id, self.worker_id, "server_error", f"The job failed because of an internal error: {exc}")
        finally:
            self._job = None
            with contextlib.suppress(Exception):  # the next beat says it again
                self._report(None)

    def _take_over(self, job: ClaimedJob) -> bool:
        """A job whose worker died holding it: say so and go on (False: it has failed instead,
        its workers lost job_max_attempts times)."""
        host = job.taken_over_from.rpartition(":")[0] or job.taken_over_from
        step = self.queue.last_step(job.id)
        where = "before its first step" if step is None else f"after step {step}"
        if job.crashes >= self.settings.job_max_attempts:
            self.queue.fail(job.id, self.worker_id, "worker_crashed",
                            f"The job's worker stopped {job.crashes} times (the last, on {host}, {where}); the job "
                            f"is not tried again. The worker may have run out of memory: a smaller batch_size, "
                            f"shorter examples or a smaller model may fit.")
            return False
        checkpoint = self.models.last_checkpoint_step(job.id)
        going_on = ("continuing from the checkpoint at step {}".format(checkpoint) if checkpoint is not None
                    else "starting again" if step is not None else "validating again")
        self._event(job, f"The worker on {host} stopped {where}; {going_on} (attempt {job.crashes + 1} of "
                         f"{self.settings.job_max_attempts})", level="warn")
        return True

    def _event(self, job: ClaimedJob, message: str, **kind) -> None:
        """An event on the job, written only while this worker holds it."""
        self.queue.event(job.id, message, worker_id=self.worker_id, **kind)

    def _hold(self, job: ClaimedJob) -> None:
        """Raise LeaseLost unless this worker still holds the job: checked before writing files."""
        if self.queue.state(job.id, self.worker_id) is None:
            raise LeaseLost(job.id)

    # validating_files -> queued ------------------------------------------------------------------
    def _validate(self, job: ClaimedJob) -> None:
        """The base model, downloaded when it is a hub model not cached yet; then the
        model-specific checks: every example renders with the base model's template and keeps
        something to train on within its context; truncated examples are warned about."""
        self._fetch(job)
        for param, file_id in _files(job):
            label = param.replace("_", " ")
            self._event(job, f"Validating {label}: {file_id}")
            failpoints.reach("validation")
            checked = self.catalog.check_file(job.base_model, self._file(job, param))
            report, stats = checked.report, checked.stats
            if job.classification and report.format != "prompt_completion":
                raise JobFailed("invalid_training_file", f"Classification metrics need prompt/completion data; the "
                                f"{label} {file_id} holds {report.format} examples.", param)
            if wrong := format_problem(job.method, report.format):
                raise JobFailed("invalid_training_file", f"The {label} {file_id} holds {wrong}.", param)
            if not report.ok:
                raise JobFailed("invalid_training_file", f"The {label} {file_id} is invalid: {report.errors[0]}", param)
            if stats.too_long:
                first = next((w for w in report.warnings if w.code == TOO_LONG), None)
                self._event(job, f"{stats.too_long} examples of the {label} are longer than the model's "
                                 f"context of {stats.context_length} tokens and will be truncated"
                                 + (f" (first: {first})" if first else ""), level="warn")
        self.queue.validated(job.id, self.worker_id)  # unless cancelled or paused meanwhile

    def _fetch(self, job: ClaimedJob) -> None:
        if self.catalog.exists(job.base_model):
            return
        name = job.base_model
        self._event(job, f"Downloading {name} from the Hugging Face hub")

        def progress(done: int, total: int) -> None:
            self._event(job, f"Downloading {name}: {done / max(total, 1):.0%} of {total / 1e6:,.0f} MB")

        try:
            self.catalog.fetch(name, progress)
        except (HubError, UnknownModel) as exc:
            raise JobFailed("model_not_found", str(exc), "model") from None
        self._event(job, f"Downloaded {name}")

    # queued -> running -> succeeded, or stopped (paused, cancelled, queued again) ----------------
    def _train(self, job: ClaimedJob) -> None:
        method = METHODS[job.method]
        resume = self.models.resume_point(job.id)
        self._event(job, "Fine-tuning job started" if resume is None else
                         f"Fine-tuning job continues from its checkpoint at step {resume.step}")
        examples = load_examples(self._file(job, "training_file"))
        valid = load_examples(self._file(job, "validation_file")) if job.validation_file else None
        hp = method.resolve(job.hyperparameters, len(examples), self.catalog.parameter_count(job.base_model),
                            self.devices[0].type)
        self.queue.record_hyperparameters(job.id, hp.as_api())
        recipe = self._recipe(job, method, RecipeInputs(
            self._start(job).weights, hp, job.seed, self.settings.device, self.settings.attention,
            resume.folder if resume else None))
        failpoints.reach("model_load")
        output = self.models.output_of(job, hp.training_type)
        classify = self._classification(job, examples, valid)
        wandb = WandbRuns(job.id, job.base_model, job.integrations, {
            "hyperparameters": hp.as_api(), "learning_rate": hp.learning_rate, "model": job.model,
            "base_model": job.base_model, "training_file": job.training_file, "validation_file": job.validation_file,
            "suffix": job.suffix, "seed": job.seed, "training_examples": len(examples)},
            self.container.integration_dir("wandb"), resume=resume is not None)
        # step -> classification metrics, for the result file (a resumed job's earlier ones from its events)
        epoch_metrics = self._logged_classification(job, resume.step) if resume else {}
        started, first_step = time.time(), resume.step if resume else 0

        def on_step(m: Metrics) -> bool:
            failpoints.reach("step", m.step)
            self._event(job, m.message(), type="metrics", data=m.as_data())
            wandb.log(m.as_data(), step=m.step)
            per_step = (time.time() - started) / (m.step - first_step)
            finish = int(time.time() + per_step * (m.total_steps - m.step))
            return keep_going(estimated_finish=finish)

        def keep_going(**fields) -> bool:  # also asked during a method's work before its first step (DPO's reference)
            return not self.stopping.is_set() and self._parent_alive() and self.queue.heartbeat(job.id, self.worker_id, **fields)

        def on_epoch_end(m: Metrics) -> None:
            if classify is not None:
                epoch_metrics[m.step] = classify(recipe)
                shown = ", ".join(f"{k.removeprefix(classification.PREFIX)}={v:.3f}" for k, v in epoch_metrics[m.step].items())
                # A message, not a metrics event: clients read train_loss from every metrics event.
                self._event(job, f"Classification metrics at step {m.step}: {shown}",
                                 data={"step": m.step, **epoch_metrics[m.step]})
                wandb.log(epoch_metrics[m.step], step=m.step)
            self._checkpoint(job, output, recipe, m)

        try:
            recipe.setup(examples, valid)
            result = recipe.train(on_step, on_epoch_end, keep_going)
            if result.stopped:
                self._stop(job, lambda: self._checkpoint_last_step(job, output, recipe, result))
                return
            self._publish(job, method, output, result, epoch_metrics, before_done=lambda: wandb.finish(
                {"fine_tuned_model": output.model_id}))
        finally:
            recipe.cleanup()
            wandb.finish(exit_code=1)  # runs still open here ended without a model

    def _recipe(self, job: ClaimedJob, method: TrainingMethod, inputs: RecipeInputs) -> Recipe:
        """The job's recipe, in this process; with several devices, this process's as rank 0 of a
        data-parallel (or sharded) run over them (the other ranks start when it sets up)."""
        nodes = self.settings.nodes
        if len(self.devices) == 1 and nodes == 1:
            return method.build(inputs if self.settings.worker_devices is None
                                else replace(inputs, device=str(self.devices[0])))
        names = [str(d) for d in self.devices]
        where = "" if nodes == 1 else f" on each of {nodes} machines"
        how = "sharded (FSDP2)" if distributed.is_sharded(job.method, inputs, self.settings.sharding) else "data parallel"
        self._event(job, f"Training on {len(names) * nodes} processes, {how}, one per device{where}: {', '.join(names)}")
        return distributed.build(job.method, inputs, names, nodes, self.settings.rendezvous, self.settings.sharding)

    def _checkpoint(self, job: ClaimedJob, output: JobOutput, recipe: Recipe, m: Metrics) -> None:
        def write(folder: Path) -> None:
            recipe.save_checkpoint(folder, m)
            failpoints.reach("checkpoint")  # written, not yet in place: never to be used

        self._hold(job)
        if self.models.save_checkpoint(output, m.step, m.as_data(), write):
            self._event(job, f"Checkpoint created at step {m.step}")

    def _checkpoint_last_step(self, job: ClaimedJob, output: JobOutput, recipe: Recipe, result) -> None:
        if result.history:  # stopped before its first step there is nothing to save: it starts again
            self._checkpoint(job, output, recipe, result.history[-1])

    def _publish(self, job: ClaimedJob, method: TrainingMethod, output: JobOutput, result, epoch_metrics: dict,
                 before_done: Callable[[], None]) -> None:
        """The result file and the model (the last checkpoint); what the job's integrations
        write is complete (before_done) when the job reads succeeded. Done again from the start
        by a worker that takes the job over: the result file of an earlier attempt is replaced."""
        failpoints.reach("publish")
        self._hold(job)
        for earlier in self.queue.result_files(job.id):
            with contextlib.suppress(NotFound):  # its owner may have deleted it
                self.files.delete(job.organization_id, earlier)
        results = self.files.store(job.organization_id, RESULTS_FILENAME, "fine-tune-results",
                                   method.results_csv(result.history, epoch_metrics))
        self.queue.record_result_file(job.id, self.worker_id, results.id)
        self.models.publish(output)
        self._event(job, f"New fine-tuned model created: {output.model_id}")
        before_done()
        self.queue.succeeded(job.id, self.worker_id, model_id=output.model_id, trained_tokens=result.trained_tokens,
                             result_file=results.id)

    def _stop(self, job: ClaimedJob, save_checkpoint: Callable[[], None]) -> None:
        """Training stopped before its end. Cancelled: its checkpoints go too. Paused, resumed
        meanwhile, or this worker going away: a checkpoint of this step is saved to go on from,
        and the job stays paused or goes back to the queue. Another worker took the job over
        after our lease ran out: it is theirs, and nothing is touched."""
        saved = False
        while (state := self.queue.state(job.id, self.worker_id)) is not None:
            if state.cancelling:
                self.models.discard_job_artefacts(job.id)
                self.queue.cancel(job.id, self.worker_id)
                return
            if not saved:
                save_checkpoint()
                saved = True
                continue  # the job may have changed while the checkpoint was written
            if self.queue.hand_back(job.id, self.worker_id, state, self.models.last_checkpoint_step(job.id)):
                return
        log.warning("job %s was taken over by another worker; this one stopped without writing", job.id)

    # what a job starts from ------------------------------------------------------------------------
    def _file(self, job: ClaimedJob, param: str) -> Path:
        file_id = getattr(job, param)
        try:
            return self.files.content_path(job.organization_id, file_id)
        except NotFound:
            raise JobFailed("invalid_training_file", f"File {file_id} no longer exists.", param) from None

    def _start(self, job: ClaimedJob):
        try:
            return self.models.resolve(job.organization_id, job.model)
        except NotFound:
            raise JobFailed("model_not_found", f"The model {job.model} to fine-tune no longer exists.", "model") from None

    def _classification(self, job: ClaimedJob, examples: list[dict], valid: list[dict] | None):
        """The epoch-end scorer of a job that asked for classification metrics, or None."""
        if not job.classification:
            return None
        try:
            return classification.scorer(job.classification, examples, valid, self.catalog.tokenizer(job.base_model))
        except classification.ClassificationError as exc:
            raise JobFailed("invalid_training_file", str(exc), exc.param) from None

    def _logged_classification(self, job: ClaimedJob, up_to_step: int) -> dict[int, dict]:
        """The classification metrics a job logged before it stopped, by step."""
        found = {}
        for data in self.queue.logged_data(job.id):
            scores = {k: v for k, v in data.items() if k.startswith(classification.PREFIX)}
            if scores and data.get("step", up_to_step + 1) <= up_to_step:
                found[data["step"]] = scores
        return found

    def _parent_alive(self) -> bool:
        return self.parent_pid is None or os.getppid() == self.parent_pid


def _process_alive(pid: int) -> bool:
    """Whether a process of this machine with that id runs (or exists as another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _import_training_libraries() -> None:
    """torch, transformers and PEFT take seconds to import: done while the worker has nothing to
    do yet. (In this thread: transformers' lazy imports are not safe from two threads at once.)"""
    for module in ("tunery.training.sft", "transformers.models.auto.modeling_auto",
                   "transformers.models.auto.tokenization_auto", "peft"):
        importlib.import_module(module)


def _files(job: ClaimedJob) -> list[tuple[str, str]]:
    return [(param, getattr(job, param)) for param in ("training_file", "validation_file") if getattr(job, param)]

