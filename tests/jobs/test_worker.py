"""The worker in-process on each real database (SQLite, PostgreSQL) and the tiny model: status
transitions, a job that fails with OpenAI's error object, a cancelled job that leaves no model
behind, a job handed back and continued, a DPO job paused before its first step."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from tests.helpers import COLOR_PREFERENCES, MARV, TINY_MODEL, jsonl
from tunery.config import Settings
from tunery.jobs.worker import Worker
from tunery.protocol.fine_tuning import CreateJobRequest
from tunery.services.container import Container


@pytest.fixture
def setup(tiny_model_dir, database):
    settings = Settings(warm_up=False, worker_poll_seconds=0.05)
    shutil.copytree(tiny_model_dir, settings.data_dir / "base_models" / TINY_MODEL)
    container = Container(settings)
    org = container.organizations.repo.ensure("default")
    training_file = container.files.create(org.id, "marv.jsonl", "fine-tune", [MARV])
    return container, Worker(Container(settings)), org, training_file


def create_job(container, org, training_file, **hyperparameters):
    request = CreateJobRequest(model=TINY_MODEL, training_file=training_file.id, suffix="t",
                               hyperparameters=hyperparameters or None)
    return container.jobs.create(org.id, request)


def test_job_runs_through_every_status_to_a_registered_model(setup):
    container, worker, org, training_file = setup
    job = create_job(container, org, training_file, n_epochs=1)
    assert job.status == "validating_files" and job.hyperparameters.n_epochs == 1
    assert worker.run_once()
    assert container.jobs.retrieve(org.id, job.id).status == "queued"
    assert worker.run_once()
    done = container.jobs.retrieve(org.id, job.id)
    assert done.status == "succeeded" and done.trained_tokens > 0
    # "auto" on a CPU: several examples per step (8, or all of a smaller file), with the
    # learning rate raised by the square root of the batch.
    n = min(8, len(MARV.splitlines()))
    assert done.hyperparameters.batch_size == n and done.hyperparameters.learning_rate_multiplier == round(n ** 0.5, 2)
    assert done.fine_tuned_model in [m.id for m in container.models.list(org.id, org.name)]
    assert not worker.run_once()


def test_missing_training_file_fails_the_job_with_an_error_object(setup):
    container, worker, org, training_file = setup
    job = create_job(container, org, training_file)
    container.files.delete(org.id, training_file.id)
    worker.run_once()
    failed = container.jobs.retrieve(org.id, job.id)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error.code == "invalid_training_file" and failed.error.param == "training_file"
    assert training_file.id in failed.error.message
    events, _ = container.jobs.events(org.id, job.id, limit=1, after=None)
    assert events[0].level == "error"


def test_job_cancelled_while_its_files_are_validated_stays_cancelled(setup):
    container, worker, org, training_file = setup
    job = create_job(container, org, training_file)
    claimed = worker.queue.claim_validation("other-worker")
    container.jobs.cancel(org.id, job.id)
    worker._validate(claimed)  # the other worker finishes validating after the cancel
    assert container.jobs.retrieve(org.id, job.id).status == "cancelled"
    assert not worker.run_once()


def test_cancelling_a_running_job_stops_it_and_registers_no_model(setup):
    container, worker, org, training_file = setup
    job = create_job(container, org, training_file, n_epochs=50, batch_size=1)
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    try:
        deadline = time.time() + 60
        while not container.jobs.checkpoints(org.id, job.id, limit=1, after=None)[0]:
            assert time.time() < deadline, "no checkpoint was written"
            time.sleep(0.05)
        container.jobs.cancel(org.id, job.id)
        while container.jobs.retrieve(org.id, job.id).status == "running":
            assert time.time() < deadline, "cancel was not honoured"
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join()
    cancelled = container.jobs.retrieve(org.id, job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    steps = [e for e in container.jobs.events(org.id, job.id, limit=100, after=None)[0] if e.type == "metrics"]
    assert len(steps) < 50 * 12
    assert not [m.id for m in container.models.list(org.id, org.name) if m.id.startswith("ft:")]
    assert not container.blobs.model_dir(job.id).exists()
    assert not container.jobs.checkpoints(org.id, job.id, limit=10, after=None)[0]
    assert not container.blobs.checkpoint_dir(job.id, 12).parent.exists()


def orphan_worker_once(worker, job, reached) -> None:
    """Validate the job, start training it, and once reached() holds, make the worker's parent
    vanish (as when `tunery serve` stops) and wait for the worker to give up."""
    worker.run_once()  # validated
    worker.parent_pid = os.getppid()
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    deadline = time.time() + 60
    while not reached():
        assert time.time() < deadline, f"{job.id} never got there"
        time.sleep(0.05)
    worker.parent_pid = -1
    thread.join(timeout=60)
    worker.parent_pid = None


def test_worker_whose_parent_is_gone_hands_its_job_back_to_the_queue(setup):
    container, worker, org, training_file = setup
    job = create_job(container, org, training_file, n_epochs=50)
    orphan_worker_once(worker, job, lambda: container.jobs.events(org.id, job.id, limit=1, after=None)[0][0].type == "metrics")
    requeued = container.jobs.retrieve(org.id, job.id)
    assert requeued.status == "queued" and requeued.fine_tuned_model is None
    assert worker.queue.claim_training("next-worker").id == job.id


def test_a_job_started_again_after_its_worker_stopped_goes_on_from_where_it_stopped(setup):
    container, worker, org, training_file = setup
    job = create_job(container, org, training_file, n_epochs=3, batch_size=1)  # 12 steps an epoch
    orphan_worker_once(worker, job, lambda: container.jobs.checkpoints(org.id, job.id, limit=1, after=None)[0])
    assert container.jobs.retrieve(org.id, job.id).status == "queued"
    stopped_at = container.jobs.checkpoints(org.id, job.id, limit=1, after=None)[0][0].step_number
    assert worker.run_once()
    done = container.jobs.retrieve(org.id, job.id)
    assert done.status == "succeeded", done.error
    events = container.jobs.events(org.id, job.id, limit=1000, after=None)[0]
    assert f"Fine-tuning job continues from its checkpoint at step {stopped_at}" in [e.message for e in events]
    # Every step was trained exactly once, across the two workers.
    assert sorted(e.data["step"] for e in events if e.type == "metrics") == list(range(1, 37))
    checkpoints, _ = container.jobs.checkpoints(org.id, job.id, limit=10, after=None)
    assert [c.step_number for c in checkpoints][:2] == [36, 24]


def test_the_heartbeat_thread_keeps_the_lease_while_no_step_runs(tiny_model_dir, database):
    """A long model load or validation sends no step, yet the job stays its worker's."""
    settings = Settings(warm_up=False, job_lease_seconds=1.0, worker_heartbeat_seconds=0.2)
    shutil.copytree(tiny_model_dir, settings.data_dir / "base_models" / TINY_MODEL)
    container = Container(settings)
    org = container.organizations.repo.ensure("default")
    training_file = container.files.create(org.id, "marv.jsonl", "fine-tune", [MARV])
    create_job(container, org, training_file)
    worker = Worker(Container(settings))
    worker._job = held = worker.queue.claim_validation(worker.worker_id)  # held, and busy elsewhere
    beating = threading.Thread(target=worker._beat_forever)
    beating.start()
    try:
        time.sleep(3 * settings.job_lease_seconds)
        assert worker.queue.claim_validation("another:1") is None, "the lease ran out while the worker was busy"
        assert [(w.id, w.job_id) for w in worker.queue.live_workers()] == [(worker.worker_id, held.id)]
    finally:
        worker.stop()
        beating.join()
    time.sleep(1.5 * settings.job_lease_seconds)  # silent now: the job is free for the next worker
    assert worker.queue.claim_validation("another:1").taken_over_from == worker.worker_id


def test_tunery_worker_on_sigterm_checkpoints_its_job_and_hands_it_back(setup):
    import signal
    import subprocess
    import sys

    container, _, org, training_file = setup
    job = create_job(container, org, training_file, n_epochs=50, batch_size=1)
    process = subprocess.Popen([sys.executable, "-m", "tunery", "worker", "--data-dir", str(container.settings.data_dir)],
                               env={**os.environ, "TUNERY_WARM_UP": "false"}, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not [e for e in container.jobs.events(org.id, job.id, limit=5, after=None)[0] if e.type == "metrics"]:
            assert time.time() < deadline and process.poll() is None, "the worker never trained"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    stopped = container.jobs.retrieve(org.id, job.id)
    assert stopped.status == "queued"
    step = container.jobs.checkpoints(org.id, job.id, limit=1, after=None)[0][0].step_number
    events = [e.message for e in container.jobs.events(org.id, job.id, limit=5, after=None)[0]]
    assert f"The worker stopped at step {step}; the job is queued to go on from there" in events
    assert container.queue.live_workers() == []  # it said goodbye


def test_a_dpo_job_paused_during_its_reference_pass_stops_with_nothing_saved_and_resumes(setup):
    container, worker, org, _ = setup
    preferences = container.files.create(org.id, "colors.jsonl", "fine-tune", [jsonl(COLOR_PREFERENCES)])
    job = container.jobs.create(org.id, CreateJobRequest(
        model=TINY_MODEL, training_file=preferences.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}}}))
    assert worker.run_once()  # validated
    claimed = worker.queue.claim_training(worker.worker_id)
    container.jobs.pause(org.id, job.id)  # before the worker's first step: while it loads, or computes references
    worker._guarded(claimed, worker._train)
    paused = container.jobs.retrieve(org.id, job.id)
    assert paused.status == "paused"
    assert not container.jobs.checkpoints(org.id, job.id, limit=1, after=None)[0]
    assert not [e for e in container.jobs.events(org.id, job.id, limit=100, after=None)[0] if e.type == "metrics"]

    container.jobs.resume(org.id, job.id)
    assert worker.run_once()
    done = container.jobs.retrieve(org.id, job.id)
    assert done.status == "succeeded", done.error
    events = container.jobs.events(org.id, job.id, limit=100, after=None)[0]
    assert sorted(e.data["step"] for e in events if e.type == "metrics") == [1, 2, 3]  # 12 pairs, 4 a step
