"""The conformance suite: every files, fine-tuning and models endpoint driven through the official
openai client. Each response's JSON is validated strictly against the SDK's own type, every list
is walked to its end by the SDK's auto-paging, and every error class the SDK maps is raised where
OpenAI raises it, in OpenAI's envelope."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai
import pytest
from openai.types import FileDeleted, FileObject, Model, ModelDeleted
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from tests.helpers import MARV, TINY_MODEL, key_for, server_factory, wait_until_finished

UPLOAD_LIMIT = 100_000
ENVELOPE_KEYS = {"message", "type", "param", "code"}
QUICK = {"n_epochs": 1, "batch_size": 12}  # one step on the tiny model


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory, tiny_model_dir):
    """The suite runs once on each database: the data directory's SQLite file, and a database of
    its own on the session's PostgreSQL server (skipped, saying why, without PostgreSQL)."""
    env = {"TUNERY_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "TUNERY_DATABASE_URL": None}
    if request.param == "postgresql":
        env["TUNERY_DATABASE_URL"] = request.getfixturevalue("postgres_cluster").new_database()
    start, servers = server_factory(tmp_path_factory.mktemp("conformance"))
    yield start(base_models=(tiny_model_dir,), env=env)
    for running in servers:
        running.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def typed(sdk_type, call, *args, **kwargs):
    """Call an SDK method's raw-response twin, validate the JSON as sent against sdk_type, and
    return what the SDK parses from it."""
    response = call(*args, **kwargs)
    sdk_type.model_validate(response.http_response.json(), strict=True)
    return response.parse()


def typed_page(item_type, call, *args, **params) -> dict:
    body = call(*args, **params).http_response.json()
    assert body["object"] == "list" and isinstance(body["has_more"], bool)
    for item in body["data"]:
        item_type.model_validate(item, strict=True)
    return body


def paused_job(body: dict) -> None:
    """A paused job: status "paused", as OpenAI's service reports it. The SDK's status Literal
    does not list that value, so the rest of the object is validated with it set aside."""
    assert body["status"] == "paused"
    FineTuningJob.model_validate(body | {"status": "queued"}, strict=True)


def upload(client, data: bytes = MARV, name: str = "marv.jsonl") -> FileObject:
    return typed(FileObject, client.files.with_raw_response.create, file=(name, io.BytesIO(data)), purpose="fine-tune")


def create_job(client, **options) -> FineTuningJob:
    options = {"model": TINY_MODEL, "training_file": upload(client).id, "hyperparameters": QUICK} | options
    return typed(FineTuningJob, client.fine_tuning.jobs.with_raw_response.create, **options)


def wait_for(condition, what: str, timeout: float = 120):
    deadline = time.time() + timeout
    while not (found := condition()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def metrics_steps(client, job_id: str) -> list[int]:
    return [e.data["step"] for e in client.fine_tuning.jobs.list_events(job_id, limit=100) if e.type == "metrics"]


# files -----------------------------------------------------------------------------------------
def test_files_endpoints(client):
    files = [upload(client, name=f"t{i}.jsonl") for i in range(5)]
    assert files[0].bytes == len(MARV) and files[0].purpose == "fine-tune" and files[0].status == "processed"
    assert typed(FileObject, client.files.with_raw_response.retrieve, files[0].id).filename == "t0.jsonl"
    assert client.files.content(files[0].id).read() == MARV

    page = typed_page(FileObject, client.files.with_raw_response.list, limit=2, purpose="fine-tune")
    assert len(page["data"]) == 2 and page["has_more"]
    walked = [f.id for f in client.files.list(limit=2, purpose="fine-tune")]
    assert sorted(walked) == sorted(f.id for f in files) and len(walked) == len(set(walked)) == 5
    assert [f.id for f in client.files.list(limit=2, order="asc")] == [f.id for f in files]
    assert [f.id for f in client.files.list(limit=2, order="desc")] == [f.id for f in reversed(files)]
    assert [f.id for f in client.files.list(purpose="fine-tune-results")] == []

    deleted = typed(FileDeleted, client.files.with_raw_response.delete, files[0].id)
    assert (deleted.id, deleted.deleted) == (files[0].id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(files[0].id)


# fine-tuning jobs and models ---------------------------------------------------------------------
def test_a_job_from_creation_to_its_model_and_that_models_deletion(client, smol_tokenizer):
    created = create_job(client, suffix="conf", seed=42, metadata={"suite": "conformance"},
                         hyperparameters={"n_epochs": 2, "batch_size": 4})
    assert created.status == "validating_files" and created.seed == 42 and created.fine_tuned_model is None
    assert created.metadata == {"suite": "conformance"} and created.method.type == "supervised"
    job = wait_until_finished(client, created.id)
    assert job.status == "succeeded", job.error
    job = typed(FineTuningJob, client.fine_tuning.jobs.with_raw_response.retrieve, job.id)
    assert job.finished_at >= job.created_at and job.estimated_finish is None and job.result_files
    # Every token of every example, once an epoch, counted with the model's own chat template.
    examples = [json.loads(line) for line in MARV.splitlines()]
    tokens = sum(len(smol_tokenizer.apply_chat_template(e["messages"], tokenize=True, return_dict=True)["input_ids"]) for e in examples)
    assert job.trained_tokens == 2 * tokens

    listed = typed_page(FineTuningJob, client.fine_tuning.jobs.with_raw_response.list, limit=100)
    assert job.id in [j["id"] for j in listed["data"]]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"suite": "conformance"})] == [job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"suite": "other"})] == []

    events = typed_page(FineTuningJobEvent, client.fine_tuning.jobs.with_raw_response.list_events, job.id, limit=100)
    assert [e["created_at"] for e in events["data"]] == sorted((e["created_at"] for e in events["data"]), reverse=True)
    assert metrics_steps(client, job.id) == [6, 5, 4, 3, 2, 1]  # newest first
    walked = [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=3)]
    assert walked == [e["id"] for e in events["data"]]

    checkpoints = typed_page(FineTuningJobCheckpoint, client.fine_tuning.jobs.checkpoints.with_raw_response.list,
                             job.id)
    assert [c["step_number"] for c in checkpoints["data"]] == [6, 3]
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=1)] == [6, 3]

    models = typed_page(Model, client.models.with_raw_response.list)
    owners = {m["id"]: m["owned_by"] for m in models["data"]}
    checkpoint_model = checkpoints["data"][0]["fine_tuned_model_checkpoint"]
    assert owners[job.fine_tuned_model] == owners[checkpoint_model] == "default" and TINY_MODEL in owners
    assert typed(Model, client.models.with_raw_response.retrieve, job.fine_tuned_model).id == job.fine_tuned_model
    answer = typed(ChatCompletion, client.chat.completions.with_raw_response.create, model=job.fine_tuned_model,
                   max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert answer.model == job.fine_tuned_model

    deleted = typed(ModelDeleted, client.models.with_raw_response.delete, job.fine_tuned_model)
    assert (deleted.id, deleted.deleted) == (job.fine_tuned_model, True)
    for call in (lambda: client.models.retrieve(job.fine_tuned_model),
                 lambda: client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "Hi"}])):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.body["code"] == "model_not_found"
    assert client.models.retrieve(checkpoint_model).id == checkpoint_model  # checkpoints stay


def test_pause_keeps_the_latest_checkpoint_and_resume_goes_on_from_it(client):
    running = create_job(client, hyperparameters={"n_epochs": 20, "batch_size": 1})  # 240 steps
    wait_for(lambda: metrics_steps(client, running.id), "the first step")
    waiting = create_job(client)  # the one worker is busy: this one waits
    paused_job(client.fine_tuning.jobs.with_raw_response.pause(waiting.id).http_response.json())

    paused_job(client.fine_tuning.jobs.with_raw_response.pause(running.id).http_response.json())
    message = wait_for(lambda: next((e.message for e in client.fine_tuning.jobs.list_events(running.id, limit=5)
                                     if "paused at step" in e.message), None), "the worker to pause")
    step = int(message.split("paused at step ")[1].split(";")[0])
    assert 0 < step < 240
    time.sleep(0.5)
    assert max(metrics_steps(client, running.id)) == step  # nothing trains while paused
    job = client.fine_tuning.jobs.retrieve(running.id)
    assert job.status == "paused" and job.estimated_finish is None and job.fine_tuned_model is None
    paused_job(client.fine_tuning.jobs.with_raw_response.pause(running.id).http_response.json())  # again: no change
    newest = next(iter(client.fine_tuning.jobs.checkpoints.list(running.id)))
    assert newest.step_number == step
    answer = client.chat.completions.create(model=newest.fine_tuned_model_checkpoint, max_tokens=2,
                                            messages=[{"role": "user", "content": "Hi"}])
    assert answer.usage.completion_tokens >= 1  # a paused job's checkpoint is a model to try

    # The job paused while it waited goes back to waiting, and trains while the other is paused.
    resumed = typed(FineTuningJob, client.fine_tuning.jobs.with_raw_response.resume, waiting.id)
    assert resumed.status == "validating_files"
    one_epoch = wait_until_finished(client, waiting.id)
    assert one_epoch.status == "succeeded", one_epoch.error

    assert typed(FineTuningJob, client.fine_tuning.jobs.with_raw_response.resume, running.id).status == "queued"
    done = wait_until_finished(client, running.id, timeout=300)
    assert done.status == "succeeded", done.error
    events = list(client.fine_tuning.jobs.list_events(running.id, limit=100))
    assert sorted(e.data["step"] for e in events if e.type == "metrics") == list(range(1, 241))  # each once
    assert f"Fine-tuning job continues from its checkpoint at step {step}" in [e.message for e in events]
    assert done.trained_tokens == 20 * one_epoch.trained_tokens

    for call in (client.fine_tuning.jobs.pause, client.fine_tuning.jobs.resume):
        with pytest.raises(openai.ConflictError) as caught:
            call(done.id)
        assert caught.value.body["param"] == "fine_tuning_job_id"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(create_job(client).id)  # not paused


def test_cancelling_a_paused_job_drops_its_checkpoints(client):
    job = create_job(client, hyperparameters={"n_epochs": 20, "batch_size": 1})
    wait_for(lambda: metrics_steps(client, job.id), "the first step")
    client.fine_tuning.jobs.pause(job.id)
    wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data, "the pause checkpoint")
    wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "paused", "the pause")
    cancelled = typed(FineTuningJob, client.fine_tuning.jobs.with_raw_response.cancel, job.id)
    cancelled = wait_until_finished(client, cancelled.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"  # nothing changed


def test_auto_paging_walks_jobs_and_checkpoints_exactly_once(client):
    jobs = [create_job(client, hyperparameters={"n_epochs": 3, "batch_size": 12}) for _ in range(5)]
    walked = [j.id for j in client.fine_tuning.jobs.list(limit=2)][:5]
    assert walked == [j.id for j in reversed(jobs)]  # newest first, each exactly once
    for job in jobs:
        assert wait_until_finished(client, job.id).status == "succeeded"
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(jobs[0].id, limit=1)]
    assert steps == [3, 2, 1]


# every error class ----------------------------------------------------------------------------------
def test_401_for_a_missing_or_unknown_key(server, client):
    with pytest.raises(openai.AuthenticationError) as caught:
        server.client(api_key="sk-not-a-key").files.list()
    assert set(caught.value.body) == ENVELOPE_KEYS and caught.value.body["code"] == "invalid_api_key"
    response = httpx.get(f"{server.base_url}/files")
    assert response.status_code == 401 and set(response.json()["error"]) == ENVELOPE_KEYS


def test_403_for_deleting_a_base_model(client):
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.models.delete(TINY_MODEL)
    assert caught.value.body["code"] == "model_not_deletable"
    assert client.models.retrieve(TINY_MODEL).id == TINY_MODEL


def test_404_for_unknown_objects_and_the_same_for_another_organizations(server, client):
    file = upload(client)
    job = create_job(client, training_file=file.id)
    other = server.client(api_key=key_for(server, "conformance-other"))
    for kind, mine, unknown in (
        ("files", lambda c, i: c.files.retrieve(i), (file.id, "file-unknown")),
        ("content", lambda c, i: c.files.content(i), (file.id, "file-unknown")),
        ("jobs", lambda c, i: c.fine_tuning.jobs.retrieve(i), (job.id, "ftjob-unknown")),
        ("events", lambda c, i: c.fine_tuning.jobs.list_events(i), (job.id, "ftjob-unknown")),
        ("checkpoints", lambda c, i: c.fine_tuning.jobs.checkpoints.list(i), (job.id, "ftjob-unknown")),
        ("pause", lambda c, i: c.fine_tuning.jobs.pause(i), (job.id, "ftjob-unknown")),
    ):
        bodies = []
        for object_id in unknown:
            with pytest.raises(openai.NotFoundError) as caught:
                mine(other, object_id)
            bodies.append({k: str(v).replace(object_id, "ID") for k, v in caught.value.body.items()})
        assert bodies[0] == bodies[1], kind  # another organization's object: as if it did not exist
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("ft:unknown")
    assert caught.value.body["code"] == "model_not_found"


def test_400_names_the_param_for_our_checks_and_for_request_validation(client):
    with pytest.raises(openai.BadRequestError) as caught:
        create_job(client, suffix="has spaces")
    assert caught.value.body["param"] == "suffix" and set(caught.value.body) == ENVELOPE_KEYS
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.list(limit=1000)  # refused by FastAPI's own validation
    assert caught.value.body["param"] == "limit" and caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/fine_tuning/jobs", body={"model": TINY_MODEL}, cast_to=FineTuningJob)  # no training_file
    assert caught.value.body["param"] == "training_file"


@pytest.fixture(scope="module")
def cursors(server, client) -> dict:
    """A finished one-step job (one checkpoint) of the default organization, and a file, a job
    and a checkpoint of another organization's, whose ids must not page the default's lists."""
    other = server.client(api_key=key_for(server, "conformance-cursors"))
    mine, theirs = (wait_until_finished(c, create_job(c).id) for c in (client, other))
    return {"job": mine.id, "file": theirs.training_file, "their_job": theirs.id,
            "their_checkpoint": next(iter(other.fine_tuning.jobs.checkpoints.list(theirs.id))).id,
            "their_event": next(iter(other.fine_tuning.jobs.list_events(theirs.id))).id}


def refused_cursor_bodies(list_page, unknown: str, foreign: str) -> list[dict]:
    """The 400 bodies of a list asked for the page after an unknown id and after another
    organization's id, each id replaced by ID (the two must not differ)."""
    bodies = []
    for after in (unknown, foreign):
        with pytest.raises(openai.BadRequestError) as caught:
            list_page(after)
        body = caught.value.body
        assert (body["type"], body["param"]) == ("invalid_request_error", "after") and after in body["message"]
        bodies.append({k: str(v).replace(after, "ID") for k, v in body.items()})
    return bodies


@pytest.mark.parametrize("kind", ["files", "jobs", "checkpoints"])
def test_400_for_an_after_cursor_that_names_no_object_of_the_list(client, cursors, kind):
    list_page, unknown, foreign = {
        "files": (lambda after: client.files.list(after=after), "file-unknown", cursors["file"]),
        "jobs": (lambda after: client.fine_tuning.jobs.list(after=after), "ftjob-unknown", cursors["their_job"]),
        "checkpoints": (lambda after: client.fine_tuning.jobs.checkpoints.list(cursors["job"], after=after),
                        "ftckpt-unknown", cursors["their_checkpoint"]),
    }[kind]
    first, second = refused_cursor_bodies(list_page, unknown, foreign)
    assert first == second  # another organization's object: as if it did not exist


def test_400_for_an_events_after_cursor_that_names_no_event_of_the_job(client, cursors):
    first, second = refused_cursor_bodies(lambda after: client.fine_tuning.jobs.list_events(cursors["job"], after=after),
                                          "ftevent-unknown", cursors["their_event"])
    assert first == second


def test_413_for_an_upload_over_the_limit(client):
    stored = [f.id for f in client.files.list()]
    with pytest.raises(openai.APIStatusError) as caught:
        upload(client, MARV * (UPLOAD_LIMIT // len(MARV) + 1))
    assert caught.value.status_code == 413 and caught.value.body["param"] == "file"
    assert [f.id for f in client.files.list()] == stored


def test_429_once_an_organization_has_its_limit_of_active_jobs(client):
    from tunery.services.fine_tuning import MAX_ACTIVE_JOBS

    file = upload(client)
    created = []
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            for _ in range(MAX_ACTIVE_JOBS + 1):
                created.append(create_job(client, training_file=file.id, hyperparameters={"n_epochs": 50, "batch_size": 1}))
        assert caught.value.body["code"] == "rate_limit_exceeded"
        active = [j for j in client.fine_tuning.jobs.list() if j.status in ("validating_files", "queued", "running")]
        assert len(active) == MAX_ACTIVE_JOBS
    finally:
        for job in created:
            client.fine_tuning.jobs.cancel(job.id)
        for job in created:
            wait_until_finished(client, job.id)
    assert create_job(client, training_file=file.id).status == "validating_files"


def test_500_only_for_a_real_fault_logged_with_its_request_id(server, client):
    file = upload(client)
    (server.data_dir / "files" / file.id).unlink()  # the blob store lost the file's bytes
    with pytest.raises(openai.InternalServerError) as caught:
        client.files.content(file.id)
    request_id = caught.value.response.headers["x-request-id"]
    assert request_id in caught.value.body["message"] and set(caught.value.body) == ENVELOPE_KEYS
    assert "Traceback" not in caught.value.body["message"]
    wait_for(lambda: request_id in server.output(), "the log line")
    logged = server.output().split(request_id, 1)[1]
    assert "Traceback" in logged and "does not exist" in logged
    assert client.files.retrieve(file.id).id == file.id  # the server goes on serving
