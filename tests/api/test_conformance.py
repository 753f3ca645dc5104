"""The SDK's view: its auto-pagination walks every list completely, and every object the API
returns validates strictly against the SDK's own types (on the JSON as sent)."""

from __future__ import annotations

import io

import httpx
import openai
import pytest
from openai.types import FileDeleted, FileObject, Model
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from tests.api.test_errors import wait_until_finished
from tests.conftest import SHARED_DATA, TINY_MODEL

MARV = (SHARED_DATA / "marv.jsonl").read_bytes()


def raw(client, path: str, **params) -> dict:
    response = httpx.get(str(client.base_url).rstrip("/") + path, params=params,
                         headers={"Authorization": f"Bearer {client.api_key}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_auto_pagination_walks_every_list_exactly_once(client):
    files = [client.files.create(file=(f"t{i}.jsonl", io.BytesIO(MARV)), purpose="fine-tune") for i in range(5)]
    walked = [f.id for f in client.files.list(limit=2, purpose="fine-tune")]
    assert sorted(walked) == sorted(f.id for f in files) and len(walked) == len(set(walked)) == 5
    assert [f.id for f in client.files.list(limit=2, order="asc")][:5] == [f.id for f in files]

    jobs = [client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=f.id,
                                           hyperparameters={"n_epochs": 1, "batch_size": 12}) for f in files]
    walked = [j.id for j in client.fine_tuning.jobs.list(limit=2)]
    assert walked == [j.id for j in reversed(jobs)]  # newest first, each exactly once
    for job in jobs:
        wait_until_finished(client, job.id)
    events = list(client.fine_tuning.jobs.list_events(jobs[0].id, limit=3))
    assert len(events) == len({e.id for e in events}) > 3
    assert [e.created_at for e in events] == sorted((e.created_at for e in events), reverse=True)


def test_every_object_validates_against_the_sdk_types(client):
    file = client.files.create(file=("marv.jsonl", io.BytesIO(MARV)), purpose="fine-tune")
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=file.id, hyperparameters={"n_epochs": 1, "batch_size": 12}).id)
    for item in raw(client, "/files")["data"]:
        FileObject.model_validate(item, strict=False)
    for item in raw(client, "/fine_tuning/jobs")["data"]:
        FineTuningJob.model_validate(item)
    for item in raw(client, f"/fine_tuning/jobs/{job.id}/events", limit=100)["data"]:
        FineTuningJobEvent.model_validate(item)
    for item in raw(client, "/models")["data"]:
        Model.model_validate(item)
    listed = raw(client, "/models")
    assert listed["object"] == "list"
    deleted = httpx.delete(str(client.base_url).rstrip("/") + f"/files/{file.id}",
                           headers={"Authorization": f"Bearer {client.api_key}"}).json()
    FileDeleted.model_validate(deleted)
    assert deleted == {"id": file.id, "object": "file", "deleted": True}


def test_cancelling_a_finished_job_is_a_conflict_and_a_queued_one_is_cancelled(client):
    file = client.files.create(file=("marv.jsonl", io.BytesIO(MARV)), purpose="fine-tune")
    done = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=file.id, hyperparameters={"n_epochs": 1, "batch_size": 12}).id)
    with pytest.raises(openai.ConflictError) as caught:
        client.fine_tuning.jobs.cancel(done.id)
    assert caught.value.body["param"] == "fine_tuning_job_id"
    assert client.fine_tuning.jobs.retrieve(done.id).status == "succeeded"  # nothing changed
    waiting = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=file.id)
    cancelled = client.fine_tuning.jobs.cancel(waiting.id)
    assert cancelled.status in ("cancelled", "running")  # a running job stops within one step
    assert wait_until_finished(client, waiting.id).status == "cancelled"
