"""Eval runs as workers see them: claim a queued run with a lease (or one whose worker went
silent: it goes on after the items already recorded), extend the lease, record each batch of
graded items with the run's new counts, and let the run go (completed, failed, or handed back to
the queue). Every write is conditional on the worker still holding the run and the run still in
progress, so a cancel or delete in between stops it without a word more written. Workers get
plain values (ClaimedRun, ItemOutcome), never database rows."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from tunery.ids import now
from tunery.protocol.evals import CriterionResult, OutputSample
from tunery.services.evals import CRITERIA, new_id
from tunery.storage.evals import EvalsRepo
from tunery.storage.tables import EvalOutputItem

@dataclass
class ClaimedRun:
    """A run a worker holds the lease of, and where it got to (counts included, to go on from)."""
    id: str
    eval_id: str
    organization_id: str
    data_source: dict[str, Any]  # as requested (protocol.evals.DataSource's fields)
    item_schema: dict[str, Any]
    criteria: list[Any]  # protocol.evals.TestingCriterion
    items_done: int
    result_counts: dict[str, int]
    per_criteria: dict[str, dict[str, int]]
    per_model_usage: dict[str, dict[str, int]]
    taken_over_from: str | None = None
    crashes: int = 0  # workers lost while holding it, this take-over included


@dataclass
class ItemOutcome:
    """One item as it was graded: its status (pass | fail | error), sample and criteria's results."""
    index: int
    item: dict[str, Any]
    status: str
    sample: OutputSample
    results: list[CriterionResult] = field(default_factory=list)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)  # model: tokens and calls for this item


class RunQueue:
    def __init__(self, repo: EvalsRepo, lease_seconds: float):
        self.repo = repo
        self.lease_seconds = lease_seconds

    def claim(self, worker_id: str) -> ClaimedRun | None:
        """The oldest queued run (or one whose worker went silent), now this worker's."""
        claimed = self.repo.claim_run(worker_id, self.lease_seconds)
        if claimed is None:
            return None
        row, previous = claimed
        evaluation = self.repo.get(row.organization_id, row.eval_id)
        if evaluation is None:  # deleted as it was claimed: its runs go with it
            return None
        return ClaimedRun(id=row.id, eval_id=row.eval_id, organization_id=row.organization_id,
                          data_source=row.data_source, item_schema=evaluation.data_source_config["item_schema"],
                          criteria=CRITERIA.validate_python(evaluation.testing_criteria), items_done=row.items_done,
                          result_counts=dict(row.result_counts), per_criteria=copy.deepcopy(row.per_criteria),
                          per_model_usage=copy.deepcopy(row.per_model_usage), taken_over_from=previous,
                          crashes=row.crashes)

    def heartbeat(self, run: ClaimedRun, worker_id: str) -> bool:
        """Extend the lease; False once the run is no longer this worker's to run."""
        return self.repo.heartbeat_run(run.id, worker_id, self.lease_seconds)

    def record(self, run: ClaimedRun, worker_id: str, outcomes: list[ItemOutcome]) -> bool:
        """The batch's output items and the run's counts grown by them, in one transaction; False
        (nothing written) when the run was canceled, deleted or taken over meanwhile."""
        counts, per_criteria, usage = (dict(run.result_counts), copy.deepcopy(run.per_criteria),
                                       copy.deepcopy(run.per_model_usage))
        rows = []
        for outcome in outcomes:
            counts[{"pass": "passed", "fail": "failed", "error": "errored"}[outcome.status]] += 1
            for result in outcome.results:
                tally = per_criteria.setdefault(result.name, {"passed": 0, "failed": 0})
                tally["passed" if result.passed else "failed"] += 1
            for model, used in outcome.usage.items():
                total = usage.setdefault(model, {})
                for key, value in used.items():
                    total[key] = total.get(key, 0) + value
            rows.append(EvalOutputItem(
                id=new_id("outputitem"), run_id=run.id, datasource_item_id=outcome.index, status=outcome.status,
                datasource_item=outcome.item, sample=outcome.sample.model_dump(),
                results=[r.model_dump() for r in outcome.results], created_at=now()))
        items_done = run.items_done + len(outcomes)
        if not self.repo.record_batch(run.id, worker_id, rows, items_done=items_done, result_counts=counts,
                                      per_criteria=per_criteria, per_model_usage=usage,
                                      lease_expires_at=time.time() + self.lease_seconds):
            return False
        run.items_done, run.result_counts, run.per_criteria, run.per_model_usage = items_done, counts, per_criteria, usage
        return True

    def completed(self, run: ClaimedRun, worker_id: str) -> bool:
        return self.repo.release_run(run.id, worker_id, status="completed")

    def fail(self, run: ClaimedRun, worker_id: str, code: str, message: str) -> bool:
        return self.repo.release_run(run.id, worker_id, status="failed", error={"code": code, "message": message})

    def hand_back(self, run: ClaimedRun, worker_id: str) -> bool:
        """Back to the queue (this worker is stopping): the next claim goes on after its recorded items."""
        return self.repo.release_run(run.id, worker_id, status="queued")

