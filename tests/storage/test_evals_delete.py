"""Deleting an eval or a run while its worker records a batch: the delete waits for the batch's
transaction and deletes its items too (no foreign key left dangling, no 500), and a batch that
comes after finds its run gone and records nothing. On SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select, update

from tunery.storage.db import Database
from tunery.storage.evals import EvalsRepo
from tunery.storage.orgs import OrgsRepo
from tunery.storage.tables import Eval, EvalOutputItem, EvalRun


def _item(run_id: str, n: int) -> EvalOutputItem:
    return EvalOutputItem(id=f"outputitem_{n}", run_id=run_id, datasource_item_id=n, status="pass",
                          datasource_item={}, sample={}, results=[], created_at=0)


@pytest.mark.parametrize("deleting", ["eval", "run"])
def test_a_delete_while_a_batch_is_recorded_waits_for_it_and_the_next_batch_records_nothing(tmp_path, database,
                                                                                            deleting):
    db = Database(f"sqlite:///{tmp_path / 'tunery.db'}" if database == "sqlite" else database)
    db.create_schema()
    org = OrgsRepo(db).ensure("org")
    repo = EvalsRepo(db)
    repo.add(Eval(id="eval_1", organization_id=org.id, name="e", data_source_config={}, testing_criteria=[],
                  created_at=0))
    repo.add(EvalRun(id="evalrun_1", eval_id="eval_1", organization_id=org.id, name="r", status="in_progress",
                     data_source={}, result_counts={}, per_criteria={}, per_model_usage={}, items_done=0,
                     created_at=0, worker_id="w"))
    failures = []

    def delete():
        try:
            repo.delete("eval_1") if deleting == "eval" else repo.delete_run("evalrun_1")
        except Exception as exc:  # pragma: no cover - what the test is about
            failures.append(exc)

    thread = threading.Thread(target=delete)
    with db.session() as s:  # a batch being recorded (as record_batch does): the run updated, its items added
        assert s.execute(update(EvalRun).where(EvalRun.id == "evalrun_1", EvalRun.worker_id == "w",
                                               EvalRun.status == "in_progress").values(items_done=1)).rowcount == 1
        s.add(_item("evalrun_1", 1))
        s.flush()
        thread.start()
        time.sleep(0.5)  # the delete is under way meanwhile
    thread.join(30)
    assert not thread.is_alive() and failures == []
    assert repo.run(None, "evalrun_1") is None
    assert not repo.record_batch("evalrun_1", "w", [_item("evalrun_1", 2)], items_done=2)
    with db.reading() as s:
        assert s.scalar(select(func.count()).select_from(EvalOutputItem)) == 0
    db.dispose()
