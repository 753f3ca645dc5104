"""Jobs on a worker with TUNERY_WORKER_DEVICES=cpu:2 (two training processes, gloo, the tiny
model): created through the official SDK, a job trains on two processes and its model answers
through chat; paused, every process stops at the same step and the job resumes to success; a
training process killed mid-run lets the job go as a crashed worker does, and it goes on from
its checkpoint. Two workers of this process as two machines (TUNERY_NODES=2, a local rendezvous)
train a job as one process would, and a machine with other devices than the first is refused."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import threading
import time

import pytest
import torch
from pydantic import ValidationError

from tests.helpers import (COLOR_EXAMPLES, TINY_MODEL, assert_answers_colours, free_port, jsonl, upload,
                           wait_until_finished)
from tunery.config import Settings
from tunery.devices import DeviceError, worker_devices
from tunery.failpoints import ENVIRONMENT
from tunery.jobs.worker import Worker
from tunery.protocol.fine_tuning import CreateJobRequest
from tunery.services.container import Container
from tunery.training.checkpoints import TRAINER_SHARDS
from tunery.training.distributed import RANK_STEP

TWO_PROCESSES = "Training on 2 processes, data parallel, one per device: cpu, cpu"
TWO_SHARDED = "Training on 2 processes, sharded (FSDP2), one per device: cpu, cpu"


def test_a_workers_devices_are_one_process_each_and_checked():
    cpu = torch.device("cpu")
    assert worker_devices(None, "cpu") == worker_devices("cpu", "auto") == [cpu]  # unset: one process, as before
    assert worker_devices(" cpu:2 ", "auto") == [cpu, cpu]
    for setting, refusal in (("cpu:0", "at least one process"), ("cuda:0,cuda:0", "each GPU at most once"),
                             ("cuda:0,cuda:99", "no CUDA device|there is no GPU 99"), ("cpu,cuda:0", "use cpu:N")):
        with pytest.raises(DeviceError, match=refusal):
            worker_devices(setting, "auto")
    with pytest.raises(ValidationError, match="use cpu:N"):
        Settings(worker_devices="gpu:2")
    assert Settings(worker_devices=" ").worker_devices is None


def test_a_job_created_with_the_sdk_trains_on_two_processes_and_its_model_answers(start_server, tiny_model_dir):
    server = start_server(base_models=(tiny_model_dir,), env={"TUNERY_WORKER_DEVICES": "cpu:2"})
    client = server.client()
    colours = upload(client, jsonl(COLOR_EXAMPLES), "colours.jsonl").id
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=colours, suffix="ddp", seed=0,
        hyperparameters={"n_epochs": 30, "batch_size": 4, "learning_rate_multiplier": 10}).id, timeout=600)
    assert job.status == "succeeded", job.error
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))  # every page
    assert TWO_PROCESSES in [e.message for e in events]
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert sorted(steps) == list(range(1, 91))  # every step reported once, by rank 0
    assert_answers_colours(client, job.fine_tuned_model)


@pytest.fixture
def two_processes(tiny_model_dir):
    """A container and an in-process worker training on two CPU processes (SQLite), and its
    organization and colours file."""
    settings = Settings(warm_up=False, worker_poll_seconds=0.05, worker_devices="cpu:2", job_lease_seconds=2.0,
                        worker_heartbeat_seconds=0.3)
    shutil.copytree(tiny_model_dir, settings.data_dir / "base_models" / TINY_MODEL)
    container = Container(settings)
    org = container.organizations.repo.ensure("default")
    colours = container.files.create(org.id, "colours.jsonl", "fine-tune", [jsonl(COLOR_EXAMPLES)])
    worker = Worker(Container(settings))
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    yield container, org, colours
    worker.stop()
    thread.join()


def create(container, org, training_file, seed: int | None = None, **hyperparameters):
    return container.jobs.create(org.id, CreateJobRequest(model=TINY_MODEL, training_file=training_file.id, seed=seed,
                                                          hyperparameters=hyperparameters))


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.05)


def events(container, org, job):
    return container.jobs.events(org.id, job.id, limit=1000, after=None)[0]


@pytest.mark.parametrize("training_type", ["lora", "full"])
def test_a_paused_job_stops_on_every_process_and_resumes_to_success(two_processes, training_type):
    """Full fine-tuning is sharded: the checkpoint it pauses at holds each process's part of the
    optimizer's state, and the published model is an ordinary folder without them."""
    container, org, colours = two_processes
    job = create(container, org, colours, n_epochs=4, batch_size=1, training_type=training_type)  # 12 steps an epoch
    wait_for(lambda: [e for e in events(container, org, job) if e.type == "metrics"], "no step was reported")
    container.jobs.pause(org.id, job.id)
    wait_for(lambda: container.jobs.retrieve(org.id, job.id).status == "paused", "the pause was not honoured")
    # The other rank followed rank 0's decision and exited (the worker runs in this process).
    wait_for(lambda: not multiprocessing.active_children(), "a training process is still running", timeout=60)
    paused_at = container.jobs.checkpoints(org.id, job.id, limit=1, after=None)[0][0].step_number
    assert paused_at < 48
    paused = container.catalog.blobs.checkpoint_dir(job.id, paused_at)
    assert (paused / TRAINER_SHARDS).is_dir() == (training_type == "full")

    container.jobs.resume(org.id, job.id)
    wait_for(lambda: container.jobs.retrieve(org.id, job.id).status not in ("paused", "queued", "running"),
             "the job did not finish")
    done = container.jobs.retrieve(org.id, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in events(container, org, job)]
    assert messages.count(TWO_PROCESSES if training_type == "lora" else TWO_SHARDED) == 2
    assert f"Fine-tuning job continues from its checkpoint at step {paused_at}" in messages
    published = container.catalog.blobs.model_dir(job.id)
    assert (published / ("model.safetensors" if training_type == "full" else "adapter_model.safetensors")).exists()
    assert not (published / TRAINER_SHARDS).exists()
    assert sorted(e.data["step"] for e in events(container, org, job) if e.type == "metrics") == list(range(1, 49))


def test_a_training_process_that_dies_lets_the_job_go_on_from_its_checkpoint(two_processes, tmp_path, monkeypatch):
    failpoints = tmp_path / "failpoints.json"
    failpoints.write_text(json.dumps({f"{RANK_STEP}=5": 1}))  # rank 1 SIGKILLed at step 5 (3 steps an epoch)
    monkeypatch.setenv(ENVIRONMENT, str(failpoints))
    container, org, colours = two_processes
    job = create(container, org, colours, n_epochs=3, batch_size=4)
    wait_for(lambda: container.jobs.retrieve(org.id, job.id).status in ("succeeded", "failed", "cancelled"),
             "the job did not finish")
    done = container.jobs.retrieve(org.id, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in events(container, org, job)]
    assert any(m.startswith("Training process 1 of 2 (cpu) was killed by SIGKILL") for m in messages), messages
    assert any("continuing from the checkpoint at step 3 (attempt 2 of 3)" in m for m in messages), messages
    steps = [e.data["step"] for e in events(container, org, job) if e.type == "metrics"]
    assert set(steps) == set(range(1, 10)) and steps.count(4) == 2  # step 4 trained again after the checkpoint


@pytest.fixture
def two_machines(tiny_model_dir):
    """start(node_devices): workers in this process as machines of one deployment (SQLite, one
    data directory, TUNERY_NODES=2 meeting at a local rendezvous port): the first (node rank 0)
    claims jobs, the second joins its runs. Yields start, the container and its organization and
    colours file; the workers stop after the test."""
    rendezvous = f"127.0.0.1:{free_port()}"
    common = {"warm_up": False, "worker_poll_seconds": 0.05, "job_lease_seconds": 2.0, "worker_heartbeat_seconds": 0.3}
    first = Settings(**common)
    shutil.copytree(tiny_model_dir, first.data_dir / "base_models" / TINY_MODEL)
    container = Container(first)
    org = container.organizations.repo.ensure("default")
    colours = container.files.create(org.id, "colours.jsonl", "fine-tune", [jsonl(COLOR_EXAMPLES)])
    running: list[tuple[Worker, threading.Thread]] = []

    def start(*devices: str | None) -> None:
        """A worker per machine, with these TUNERY_WORKER_DEVICES (one machine: no rendezvous)."""
        nodes = {} if len(devices) == 1 else {"nodes": len(devices), "rendezvous": rendezvous}
        for rank, setting in enumerate(devices):
            worker = Worker(Container(Settings(**common, **nodes, node_rank=rank, worker_devices=setting)))
            thread = threading.Thread(target=worker.run_forever)
            thread.start()
            running.append((worker, thread))

    def stop() -> None:
        for worker, thread in running:
            worker.stop()
            thread.join()
        running.clear()

    yield start, stop, container, org, colours
    stop()


def test_two_machines_meet_at_the_rendezvous_and_train_a_job_as_one_process_would(two_machines):
    start, stop, container, org, colours = two_machines
    start(None)  # the reference: one machine, one process
    alone = create(container, org, colours, seed=3, n_epochs=2, batch_size=4)
    wait_for(lambda: container.jobs.retrieve(org.id, alone.id).status in ("succeeded", "failed"), "the job did not finish")
    stop()
    start("cpu:1", "cpu:1")  # two machines with a CPU process each
    job = create(container, org, colours, seed=3, n_epochs=2, batch_size=4)
    wait_for(lambda: container.jobs.retrieve(org.id, job.id).status in ("succeeded", "failed"), "the job did not finish")
    done = container.jobs.retrieve(org.id, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in events(container, org, job)]
    assert "Training on 2 processes, data parallel, one per device on each of 2 machines: cpu" in messages

    def losses(of) -> dict[int, float]:
        return {e.data["step"]: e.data["train_loss"] for e in events(container, org, of) if e.type == "metrics"}
    assert sorted(losses(job)) == list(range(1, 7))  # every step reported once, by rank 0
    assert losses(job) == pytest.approx(losses(alone), abs=1e-3)  # the whole batch's update, across machines


def test_a_machine_whose_devices_differ_from_the_first_is_refused_with_the_reason(two_machines, monkeypatch):
    start, _, container, org, colours = two_machines
    monkeypatch.setattr("tunery.training.distributed.RENDEZVOUS_SECONDS", 60)
    start("cpu:1", "cpu:2")
    job = create(container, org, colours, n_epochs=1, batch_size=4)
    wait_for(lambda: container.jobs.retrieve(org.id, job.id).status in ("succeeded", "failed"), "the job did not finish")
    done = container.jobs.retrieve(org.id, job.id)
    assert done.status == "failed"
    messages = " ".join(e.message for e in events(container, org, job))
    reason = ("machine 1 has 2 training devices (cpu, cpu), the first machine 1 (cpu): TUNERY_WORKER_DEVICES must be "
              "alike on every machine")
    assert reason.lower() in (messages + done.error.message).lower()


def test_a_training_process_lost_on_another_machine_lets_the_job_go_on_from_its_checkpoint(two_machines, tmp_path,
                                                                                            monkeypatch):
    failpoints = tmp_path / "failpoints.json"
    failpoints.write_text(json.dumps({f"{RANK_STEP}=5": 1}))  # rank 1, the second machine's, SIGKILLed at step 5
    monkeypatch.setenv(ENVIRONMENT, str(failpoints))
    start, _, container, org, colours = two_machines
    start("cpu:1", "cpu:1")
    job = create(container, org, colours, n_epochs=3, batch_size=4)
    wait_for(lambda: container.jobs.retrieve(org.id, job.id).status in ("succeeded", "failed"), "the job did not finish")
    done = container.jobs.retrieve(org.id, job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in events(container, org, job)]
    assert any(m.startswith("A training process on another machine stopped") for m in messages), messages
    assert any("continuing from the checkpoint at step 3 (attempt 2 of 3)" in m for m in messages), messages
