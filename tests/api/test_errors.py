"""Bad requests get OpenAI's error envelope, the SDK's matching exception, and store nothing."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.helpers import MARV, TINY_MODEL, upload, wait_until_finished


def test_training_file_with_a_bad_line_is_refused_and_not_stored(client):
    lines = MARV.splitlines()
    lines[2] = b'{"messages": [{"role": "robot", "content": "beep"}]}'
    stored = len(client.files.list().data)
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, b"\n".join(lines))
    error = caught.value.body
    assert error["param"] == "file" and error["code"] == "invalid_file_format"
    assert "line 3" in error["message"] and "unknown_role" in error["message"]
    assert len(client.files.list().data) == stored


def test_fine_tune_files_must_be_jsonl(client):
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, name="train.csv")
    assert caught.value.body["param"] == "file"


@pytest.mark.parametrize("overrides, param", [
    ({"suffix": "has spaces"}, "suffix"),
    ({"suffix": "x" * 65}, "suffix"),
    ({"seed": -1}, "seed"),
    ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": 0}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"learning_rate_multiplier": 0}}, "hyperparameters.learning_rate_multiplier"),
    ({"method": {"type": "reinforcement"}}, "method.type"),  # not available yet
    ({"training_file": "file-doesnotexist"}, "training_file"),
    ({"integrations": [{"type": "slack"}]}, "integrations"),
])
def test_bad_job_parameters_are_refused_naming_the_param(client, overrides, param):
    training_file = upload(client).id
    newest = [j.id for j in client.fine_tuning.jobs.list(limit=1).data]
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(**({"model": TINY_MODEL, "training_file": training_file} | overrides))
    assert caught.value.body["param"] == param
    assert [j.id for j in client.fine_tuning.jobs.list(limit=1).data] == newest  # no job was stored


def test_unknown_objects_are_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.fine_tuning.jobs.create(model="no-such-model", training_file=upload(client).id)
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-nope")
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="ft:nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found"


def test_request_validation_errors_use_the_envelope(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=TINY_MODEL, messages=[])
    assert caught.value.body["param"] == "messages"
    assert set(caught.value.body) == {"message", "type", "param", "code"}


def test_a_file_failing_the_models_checks_fails_the_job_naming_the_line(client):
    lines = MARV.splitlines()
    past_context = {"messages": [{"role": "user", "content": "word " * 1100}, {"role": "assistant", "content": "ok"}]}
    lines.insert(4, json.dumps(past_context).encode())  # the tiny model's context is 1024 tokens
    bad = upload(client, b"\n".join(lines))  # the format is fine: the upload is accepted
    for param, files in (("training_file", {"training_file": bad.id}),
                         ("validation_file", {"training_file": upload(client).id, "validation_file": bad.id})):
        job = wait_until_finished(client, client.fine_tuning.jobs.create(model=TINY_MODEL, **files).id)
        assert job.status == "failed" and job.fine_tuned_model is None
        assert (job.error.code, job.error.param) == ("invalid_training_file", param)
        assert "line 5" in job.error.message and "nothing_to_train" in job.error.message


@pytest.mark.parametrize("raw, param", [
    ('{"learning_rate_multiplier": NaN}', "hyperparameters.learning_rate_multiplier"),
    ('{"learning_rate_multiplier": Infinity}', "hyperparameters.learning_rate_multiplier"),
    ('{"learning_rate_multiplier": 1e309}', "hyperparameters.learning_rate_multiplier"),
    ('{"learning_rate_multiplier": 1e308}', "hyperparameters.learning_rate_multiplier"),
    ('{"learning_rate_multiplier": 1e-300}', "hyperparameters.learning_rate_multiplier"),
    ('{"n_epochs": true}', "hyperparameters.n_epochs"),
    ('{"n_epochs": "3"}', "hyperparameters.n_epochs"),
    ('{"batch_size": 2.5}', "hyperparameters.batch_size"),
])
def test_hyperparameters_that_are_no_sensible_number_are_refused_naming_the_field(client, raw, param):
    training_file = upload(client).id
    body = f'{{"model": "{TINY_MODEL}", "training_file": "{training_file}", "hyperparameters": {raw}}}'
    with pytest.raises(openai.BadRequestError) as caught:  # raw JSON: the SDK would not send NaN or 1e309
        client.post("/fine_tuning/jobs", cast_to=httpx.Response, content=body.encode(),
                    options={"headers": {"Content-Type": "application/json"}})
    assert caught.value.body["param"] == param and caught.value.body["type"] == "invalid_request_error"


def test_top_level_hyperparameters_that_disagree_with_the_methods_are_refused(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client).id, hyperparameters={"n_epochs": 2},
                                       method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}})
    assert caught.value.body["param"] == "hyperparameters"


def test_a_body_that_is_no_json_names_no_param(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/fine_tuning/jobs", cast_to=httpx.Response, content=b'{"model": "x", ',
                    options={"headers": {"Content-Type": "application/json"}})
    assert caught.value.body["param"] is None and "JSON" in caught.value.body["message"]


def test_a_model_name_too_long_for_any_folder_is_not_found(client):
    # found by the fuzzer: the name was looked up as a base-model folder and the OSError was a 500
    name = "x" * 3000
    for call in (client.models.retrieve, client.models.delete):
        with pytest.raises(openai.NotFoundError):
            call(name)
