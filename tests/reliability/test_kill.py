"""Workers SIGKILLed under a real `tunery serve` (the tiny model, real processes): at five points of
a job's life the worker process dies as the out-of-memory killer kills it; `serve` starts it
again, the new worker takes the job over, and the job ends as the uninterrupted run did (the
same final loss, one model, one result file). A job that kills its worker every time fails
after job_max_attempts. The points are named by tunery.failpoints, armed through a file the
running server reads (TUNERY_FAILPOINTS)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.helpers import COLOR_EXAMPLES, TINY_MODEL, jsonl, upload, wait_until_finished

EPOCHS, STEPS_PER_EPOCH = 3, len(COLOR_EXAMPLES)  # batch 1: 12 steps an epoch, a checkpoint at 12 and 24
KILL_POINTS = ["validation", "model_load", f"step={STEPS_PER_EPOCH + 6}", "checkpoint", "publish"]


@pytest.fixture(scope="module")
def armed(start_module_server, tiny_model_dir, tmp_path_factory):
    """A server whose worker dies at the failpoints written to `failpoints` (none at first), and
    the colour task's file on it."""
    failpoints = tmp_path_factory.mktemp("failpoints") / "failpoints.json"
    failpoints.write_text("{}")
    server = start_module_server(base_models=(tiny_model_dir,), env={"TUNERY_FAILPOINTS": str(failpoints)})
    client = server.client()
    colours = upload(client, jsonl(COLOR_EXAMPLES), "colours.jsonl")
    return server, client, colours.id, failpoints


def run_job(client, training_file: str, timeout: float = 240):
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=training_file, seed=0,
                                         hyperparameters={"n_epochs": EPOCHS, "batch_size": 1})
    return wait_until_finished(client, job.id, timeout=timeout)


def final_loss(client, job_id: str) -> float:
    events = client.fine_tuning.jobs.list_events(job_id, limit=100)  # newest first, auto-paged
    return next(e.data["train_loss"] for e in events if e.type == "metrics")


def messages(client, job_id: str) -> list[str]:
    return [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=100)]


@pytest.fixture(scope="module")
def uninterrupted(armed):
    _, client, training_file, _ = armed
    job = run_job(client, training_file)
    assert job.status == "succeeded", job.error
    return job, final_loss(client, job.id)


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_job_whose_worker_is_killed_ends_as_the_uninterrupted_run(armed, uninterrupted, point):
    server, client, training_file, failpoints = armed
    baseline, baseline_loss = uninterrupted
    failpoints.write_text(json.dumps({point: 1}))
    job = run_job(client, training_file)
    assert json.loads(failpoints.read_text())[point] == 0, "the worker was never killed there"
    assert job.status == "succeeded", job.error
    assert final_loss(client, job.id) == pytest.approx(baseline_loss, abs=1e-4)
    assert job.trained_tokens == baseline.trained_tokens
    assert len(job.result_files) == 1 and client.files.retrieve(job.result_files[0]).purpose == "fine-tune-results"
    taken_over = [m for m in messages(client, job.id) if m.startswith("The worker on ")]
    assert len(taken_over) == 1, taken_over
    assert "(attempt 2 of 3)" in taken_over[0]
    assert "was killed by SIGKILL" in server.output()


@pytest.mark.slow
def test_a_job_that_kills_its_worker_every_time_fails_after_three_attempts(armed):
    _, client, training_file, failpoints = armed
    failpoints.write_text(json.dumps({"step=3": 100}))
    try:
        job = run_job(client, training_file)
    finally:
        failpoints.write_text("{}")
    assert job.status == "failed"
    assert job.error.code == "worker_crashed"
    # Killed as step 3 ended, before it was logged: step 2 is the last the job saw.
    assert "3 times" in job.error.message and "after step 2" in job.error.message, job.error.message
    assert len([m for m in messages(client, job.id) if m.startswith("The worker on ")]) == 2


@pytest.mark.slow
def test_serve_brings_back_a_worker_killed_from_outside_and_its_job_finishes(armed, uninterrupted):
    server, client, training_file, _ = armed
    _, baseline_loss = uninterrupted
    from typer.testing import CliRunner

    from tunery.cli import app

    def workers() -> list[dict]:  # as `tunery workers --json` lists them
        listed = CliRunner().invoke(app, ["workers", "--json", "--data-dir", str(server.data_dir)])
        assert listed.exit_code == 0, listed.output
        return json.loads(listed.output)

    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=training_file, seed=0,
                                         hyperparameters={"n_epochs": EPOCHS, "batch_size": 1})
    deadline = time.time() + 120
    while not client.fine_tuning.jobs.checkpoints.list(job.id).data:  # gently: serve's worker runs niced
        assert time.time() < deadline, "the job never reached its first checkpoint"
        time.sleep(0.2)
    holders = [w for w in workers() if w["job_id"] == job.id]
    assert holders[0]["device"] == "cpu" and holders[0]["host"] and time.time() - holders[0]["heartbeat_at"] < 30
    killed = holders[0]["pid"]
    os.kill(killed, signal.SIGKILL)  # nobody restarts anything: serve does
    done = wait_until_finished(client, job.id, timeout=240)
    assert done.status == "succeeded", done.error
    assert final_loss(client, job.id) == pytest.approx(baseline_loss, abs=1e-4)
    assert any(f"pid {killed}) was killed by SIGKILL" in line for line in server.output().splitlines())
    assert [w["pid"] for w in workers()] not in ([], [killed])


@pytest.mark.slow
def test_a_worker_paused_past_its_lease_stops_without_writing_when_it_comes_back(start_server, tiny_model_dir):
    import subprocess
    import sys

    from tunery.config import Settings
    from tunery.services.container import Container

    short = {"TUNERY_JOB_LEASE_SECONDS": "3", "TUNERY_WORKER_HEARTBEAT_SECONDS": "0.5"}
    server = start_server(base_models=(tiny_model_dir,), env=short)
    client = server.client()
    colours = upload(client, jsonl(COLOR_EXAMPLES), "colours.jsonl")
    queue = Container(Settings(data_dir=server.data_dir, warm_up=False)).queue
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=colours.id, seed=0,
                                         hyperparameters={"n_epochs": 8, "batch_size": 1})
    deadline = time.time() + 120
    while not client.fine_tuning.jobs.checkpoints.list(job.id).data:  # gently: serve's worker runs niced
        assert time.time() < deadline, "the job never reached its first checkpoint"
        time.sleep(0.2)
    paused = next(w.pid for w in queue.live_workers() if w.job_id == job.id)
    os.kill(paused, signal.SIGSTOP)  # alive, silent: its lease runs out
    second = subprocess.Popen([sys.executable, "-m", "tunery", "worker", "--data-dir", str(server.data_dir)],
                              env={**os.environ, **short, "TUNERY_WARM_UP": "false"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not [w for w in queue.live_workers() if w.job_id == job.id and w.pid == second.pid]:
            assert time.time() < deadline + 60, "nobody took the job over"
            time.sleep(0.2)
        os.kill(paused, signal.SIGCONT)  # back, mid-step, believing the job is its own
        done = wait_until_finished(client, job.id, timeout=240)
    finally:
        os.kill(paused, signal.SIGCONT)
        second.terminate()
        second.wait(timeout=60)
    assert done.status == "succeeded", done.error
    events = list(reversed(list(client.fine_tuning.jobs.list_events(job.id, limit=100))))
    taken = next(i for i, e in enumerate(events) if e.message.startswith("The worker on "))
    resumed_from = int(events[taken].message.rsplit("checkpoint at step ", 1)[1].split(" ")[0])
    after = [e.data["step"] for e in events[taken:] if e.type == "metrics"]
    assert after == list(range(resumed_from + 1, 8 * STEPS_PER_EPOCH + 1)), "two workers trained the job at once"
    assert "was taken over by another worker; this one stopped without writing" in server.output()
