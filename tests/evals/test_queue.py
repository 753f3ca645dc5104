"""Eval runs as workers claim them, on SQLite and PostgreSQL: one worker's run is no other's while
its lease holds; a silent worker's run is taken over after the items it recorded, and the silent
worker can then record nothing; a canceled run records nothing more; a run whose workers keep
stopping fails past TUNERY_JOB_MAX_ATTEMPTS."""

from __future__ import annotations

import threading
import time

from tunery.config import Settings
from tunery.jobs.evals import Execution
from tunery.protocol.evals import CreateEvalRequest, CreateRunRequest, OutputSample
from tunery.services.container import Container
from tunery.services.eval_runs import ItemOutcome

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}


def outcome(index: int, status: str = "pass") -> ItemOutcome:
    return ItemOutcome(index, {"answer": str(index)}, status, OutputSample())


def test_a_run_is_one_workers_until_its_lease_runs_out(database):
    container = Container(Settings(job_lease_seconds=1.0))
    org = container.organizations.repo.ensure("default")
    evaluation = container.evals.create(org.id, CreateEvalRequest.model_validate({
        "data_source_config": {"type": "custom", "item_schema": {"type": "object"}}, "testing_criteria": [EXACT]}))
    run = container.evals.create_run(org.id, evaluation.id, CreateRunRequest.model_validate({"data_source": {
        "type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"answer": str(i)}} for i in range(4)]}}}))
    queue = container.eval_runs

    first = queue.claim("worker-a")
    assert first.id == run.id and first.items_done == 0 and first.taken_over_from is None
    assert container.evals.run(org.id, evaluation.id, run.id).status == "in_progress"
    assert queue.claim("worker-b") is None  # held
    assert queue.record(first, "worker-a", [outcome(0), outcome(1, "fail")])

    time.sleep(1.2)  # worker-a goes silent past its lease
    second = queue.claim("worker-b")
    assert second.id == run.id and second.taken_over_from == "worker-a" and second.items_done == 2
    assert second.result_counts == {"total": 4, "passed": 1, "failed": 1, "errored": 0}
    assert not queue.heartbeat(first, "worker-a") and not queue.record(first, "worker-a", [outcome(2)])
    assert queue.record(second, "worker-b", [outcome(2, "error")])

    container.evals.cancel_run(org.id, evaluation.id, run.id)
    assert not queue.heartbeat(second, "worker-b") and not queue.record(second, "worker-b", [outcome(3)])
    assert not queue.completed(second, "worker-b")
    final = container.evals.run(org.id, evaluation.id, run.id)
    assert final.status == "canceled"
    assert final.result_counts.model_dump() == {"total": 4, "passed": 1, "failed": 1, "errored": 1}
    items, _ = container.evals.output_items(org.id, evaluation.id, run.id, limit=10, after=None, order="asc", status=None)
    assert [(i.datasource_item_id, i.status) for i in items] == [(0, "pass"), (1, "fail"), (2, "error")]
    assert queue.claim("worker-c") is None  # nothing left to run


def test_a_run_whose_workers_keep_stopping_fails_past_the_attempt_limit(database):
    container = Container(Settings(job_lease_seconds=0.5, job_max_attempts=2))
    org = container.organizations.repo.ensure("default")
    evaluation = container.evals.create(org.id, CreateEvalRequest.model_validate({
        "data_source_config": {"type": "custom", "item_schema": {"type": "object"}}, "testing_criteria": [EXACT]}))
    run = container.evals.create_run(org.id, evaluation.id, CreateRunRequest.model_validate({"data_source": {
        "type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"answer": "1"}}]}}}))
    claimed = container.eval_runs.claim("host:worker-a")
    assert claimed.crashes == 0
    for crashes, worker in [(1, "host:worker-b"), (2, "host:worker-c")]:
        time.sleep(0.6)  # the worker holding it went silent past its lease
        claimed = container.eval_runs.claim(worker)
        assert claimed.id == run.id and claimed.crashes == crashes
    Execution(container, claimed, "host:worker-c", threading.Event()).execute()
    failed = container.evals.run(org.id, evaluation.id, run.id)
    assert failed.status == "failed" and failed.error.code == "worker_crashed"
    assert "stopped 2 times" in failed.error.message and "TUNERY_JOB_MAX_ATTEMPTS" in failed.error.message
