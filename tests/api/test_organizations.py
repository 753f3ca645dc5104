"""Organizations are kept apart: another organization's key sees, downloads, uses, cancels and
deletes nothing of this one's (every answer the same as for an object that does not exist);
revoked keys stop working; owners delete their fine-tuned models, nobody deletes a base model."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from typer.testing import CliRunner

from tests.helpers import TINY_MODEL, key_for, upload, wait_until_finished
from tunery.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def owned(tiny_server):
    """A file, a finished job and its model, all of organization "default"."""
    client = tiny_server.client()
    file = upload(client)
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=file.id, metadata={"team": "search", "run": "1"},
        hyperparameters={"n_epochs": 1, "batch_size": 4}).id)
    assert job.status == "succeeded"
    return file, job


def test_another_organization_sees_and_touches_nothing(tiny_server, owned):
    file, job = owned
    other = tiny_server.client(api_key=key_for(tiny_server, "other-org"))
    assert other.files.list().data == [] and other.fine_tuning.jobs.list().data == []
    assert job.fine_tuned_model not in {m.id for m in other.models.list()}
    for attempt in (lambda: other.files.retrieve(file.id), lambda: other.files.content(file.id),
                    lambda: other.files.delete(file.id), lambda: other.fine_tuning.jobs.retrieve(job.id),
                    lambda: other.fine_tuning.jobs.cancel(job.id), lambda: other.fine_tuning.jobs.list_events(job.id),
                    lambda: other.fine_tuning.jobs.checkpoints.list(job.id), lambda: other.models.retrieve(job.fine_tuned_model),
                    lambda: other.models.delete(job.fine_tuned_model),
                    lambda: other.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])):
        with pytest.raises(openai.NotFoundError):
            attempt()
    with pytest.raises(openai.BadRequestError) as caught:  # another's file is as good as no file
        other.fine_tuning.jobs.create(model=TINY_MODEL, training_file=file.id)
    assert caught.value.body["param"] == "training_file"
    # Not found looks the same whether the object is another's or does not exist at all.
    headers = {"Authorization": f"Bearer {other.api_key}"}
    base = str(other.base_url).rstrip("/")
    foreign = httpx.get(f"{base}/fine_tuning/jobs/{job.id}", headers=headers).json()["error"]
    missing = httpx.get(f"{base}/fine_tuning/jobs/ftjob-missing", headers=headers).json()["error"]
    assert foreign["message"].replace(job.id, "X") == missing["message"].replace("ftjob-missing", "X")
    # ...and the owner still has everything.
    owner = tiny_server.client()
    assert owner.files.retrieve(file.id).id == file.id and owner.fine_tuning.jobs.retrieve(job.id).status == "succeeded"


def test_a_revoked_key_is_refused(tiny_server):
    key = key_for(tiny_server, "short-lived")
    tiny_server.client(api_key=key).models.list()
    listed = runner.invoke(app, ["keys", "list", "--json", "--data-dir", str(tiny_server.data_dir)])
    key_id = next(k["id"] for k in json.loads(listed.output) if k["organization"] == "short-lived")
    assert runner.invoke(app, ["keys", "revoke", key_id, "--data-dir", str(tiny_server.data_dir)]).exit_code == 0
    with pytest.raises(openai.AuthenticationError):
        tiny_server.client(api_key=key).models.list()


def test_jobs_filter_by_metadata_and_metadata_is_limited(tiny_server, owned):
    client = tiny_server.client()
    _, job = owned
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "search"})] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "ads"}).data == []
    assert client.fine_tuning.jobs.retrieve(job.id).metadata == {"team": "search", "run": "1"}
    for metadata in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}):
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client).id, metadata=metadata)
        assert caught.value.body["param"] == "metadata"


def test_owners_delete_fine_tuned_models_and_nobody_deletes_a_base_model(tiny_server, owned):
    client = tiny_server.client()
    _, job = owned
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete(TINY_MODEL)
    deleted = client.models.delete(job.fine_tuned_model)
    assert deleted.deleted and deleted.id == job.fine_tuned_model
    assert job.fine_tuned_model not in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        client.models.delete(job.fine_tuned_model)
