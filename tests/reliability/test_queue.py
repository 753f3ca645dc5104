"""The job queue under contention, on SQLite and PostgreSQL: worker processes claiming from one
queue take each job exactly once; a worker leaves jobs for another device to that device's live
workers; a job whose worker went silent is taken over, and the take-over is counted."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

from tunery.config import Settings
from tunery.ids import new_id, now
from tunery.services.container import Container
from tunery.storage.tables import Job

QUEUED_JOBS = 1000
WORKER_PROCESSES = 8


def queue_jobs(container: Container, count: int, **fields) -> list[str]:
    """`count` queued jobs of the default organization, oldest first, written in one transaction."""
    org = container.organizations.repo.ensure("default")
    rows = [Job(id=new_id("ftjob"), organization_id=org.id, model="m", base_model="m", training_file="file-x",
                seed=0, status="queued", hyperparameters={}, method={"type": "supervised"}, result_files=[],
                created_at=now(), sort_key=time.time() + i * 1e-6, **fields) for i in range(count)]
    with container.db.session() as s:
        s.add_all(rows)
    return [row.id for row in rows]


def claim_until_empty(data_dir: str, out: str) -> None:
    """A worker process that only claims: each job it gets is marked succeeded; it stops once no
    job is left queued. Writes the ids it took, one a line."""
    os.environ["TUNERY_DATA_DIR"] = data_dir
    container = Container(Settings(warm_up=False))
    worker_id = f"test:{os.getpid()}"
    taken = []
    while True:
        job = container.queue.claim_training(worker_id)
        if job is None:
            if not container.jobs.repo.list(container.organizations.repo.ensure("default").id, limit=1,
                                            status="queued"):
                break
            continue  # lost every race this time
        taken.append(job.id)
        container.queue.jobs.release(job.id, only_if_worker=worker_id, status="succeeded")
    Path(out).write_text("\n".join(taken))


def test_worker_processes_take_each_queued_job_exactly_once(database, tmp_path):
    container = Container(Settings(warm_up=False))
    expected = queue_jobs(container, QUEUED_JOBS)
    spawn = multiprocessing.get_context("spawn")  # fresh processes, as separate workers are
    outs = [tmp_path / f"worker-{i}.txt" for i in range(WORKER_PROCESSES)]
    processes = [spawn.Process(target=claim_until_empty, args=(os.environ["TUNERY_DATA_DIR"], str(out)))
                 for out in outs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
        assert process.exitcode == 0, "a worker process failed (database is locked?)"
    taken = [line for out in outs for line in out.read_text().split("\n") if line]
    assert len(taken) == len(set(taken)), "a job was claimed twice"
    assert sorted(taken) == sorted(expected)
    assert sum(1 for out in outs if out.read_text()) > 1, "one worker took everything: no contention was tested"


def test_a_worker_leaves_jobs_for_another_device_to_its_live_workers(database):
    container = Container(Settings(warm_up=False))
    queue = container.queue
    gpu_jobs, plain_job = queue_jobs(container, 2, device="cuda"), queue_jobs(container, 1)[0]
    queue.worker_beat("gpu-host:1", host="gpu-host", pid=1, device="cuda", job_id=None, started_at=time.time())
    assert [w.device for w in queue.live_workers()] == ["cuda"]
    assert queue.claim_training("cpu-host:1", "cpu").id == plain_job  # the older GPU jobs wait for the GPU worker
    assert queue.claim_training("cpu-host:1", "cpu") is None
    assert queue.claim_training("gpu-host:1", "cuda").id == gpu_jobs[0]
    queue.worker_gone("gpu-host:1")  # with no GPU worker left, a CPU worker runs them rather than nobody
    assert queue.live_workers() == []
    assert queue.claim_training("cpu-host:1", "cpu").id == gpu_jobs[1]


def test_a_silent_workers_job_is_taken_over_and_counted(database):
    container = Container(Settings(warm_up=False, job_lease_seconds=0.2))
    queue = container.queue
    job_id = queue_jobs(container, 1)[0]
    first = queue.claim_training("host-a:1")
    assert (first.id, first.taken_over_from, first.crashes) == (job_id, None, 0)
    assert queue.claim_training("host-b:2") is None  # leased
    time.sleep(0.3)
    second = queue.claim_training("host-b:2")
    assert second.id == job_id and second.taken_over_from == "host-a:1" and second.crashes == 1
    assert not queue.heartbeat(job_id, "host-a:1"), "the silent worker got its lease back"
    assert not queue.event(job_id, "a step of the silent worker", worker_id="host-a:1")
    assert queue.event(job_id, "a step of the new worker", worker_id="host-b:2")


def test_the_job_of_a_dead_local_worker_is_freed_at_once(database):
    container = Container(Settings(warm_up=False, job_lease_seconds=3600))
    queue = container.queue
    job_id = queue_jobs(container, 1)[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    worker_id = f"this-host:{dead.pid}"
    queue.worker_beat(worker_id, host="this-host", pid=dead.pid, device="cpu", job_id=job_id, started_at=time.time())
    assert queue.claim_training(worker_id).id == job_id
    assert queue.claim_training("this-host:new") is None  # an hour's lease
    assert queue.release_dead_local_workers("this-host", lambda pid: pid != dead.pid) == 1
    taken = queue.claim_training("this-host:new")
    assert taken.id == job_id and taken.taken_over_from == worker_id and taken.crashes == 1
