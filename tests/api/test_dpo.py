"""DPO jobs through the official client, as OpenAI's API takes them: created with beta "auto",
their events carrying the preference figures, their result file and model; refused when their
beta, hyperparameters or data are not a DPO job's; continued from a supervised fine-tune."""

from __future__ import annotations

import csv
import io
import math

import openai
import pytest

from tests.helpers import COLOR_EXAMPLES, COLOR_PREFERENCES, TINY_MODEL, jsonl, upload, wait_until_finished


def dpo(**hyperparameters) -> dict:
    return {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}


def test_a_dpo_job_with_beta_auto_trains_and_shows_its_preference_figures(client):
    training, validation = upload(client, jsonl(COLOR_PREFERENCES)), upload(client, jsonl(COLOR_PREFERENCES))
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=training.id, validation_file=validation.id,
                                         method=dpo(beta="auto", n_epochs=2, batch_size=4))
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == "auto"
    job = wait_until_finished(client, job.id)
    assert job.status == "succeeded", job.error
    resolved = job.method.dpo.hyperparameters
    assert (resolved.beta, resolved.n_epochs, resolved.batch_size) == (0.1, 2, 4)
    assert isinstance(resolved.learning_rate_multiplier, float) and job.method.supervised is None

    metrics = sorted((e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"),
                     key=lambda e: e.data["step"])
    assert [e.data["step"] for e in metrics] == list(range(1, 7))
    assert metrics[0].data["train_loss"] == pytest.approx(math.log(2), abs=1e-4)  # the model is its own reference
    assert {"train_reward_margin", "train_reward_accuracy", "train_chosen_logps", "train_rejected_logps",
            "full_valid_loss", "full_valid_reward_accuracy"} <= set(metrics[-1].data)

    (result_id,) = job.result_files
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_id).text)))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert {"train_loss", "train_reward_accuracy", "train_reward_margin", "full_valid_reward_accuracy"} <= set(rows[0])
    answer = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=3,
                                            messages=[{"role": "user", "content": "red"}])
    assert answer.model == job.fine_tuned_model


@pytest.mark.parametrize("beta", [0, -0.1, 2.5, "0.1", True])
def test_a_beta_out_of_range_is_a_400_naming_it(client, beta):
    training = upload(client, jsonl(COLOR_PREFERENCES))
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=training.id, method=dpo(beta=beta))
    assert refused.value.body["param"] == "method.dpo.hyperparameters.beta", refused.value.body


def test_a_dpo_job_takes_its_hyperparameters_in_its_method_only(client):
    training = upload(client, jsonl(COLOR_PREFERENCES))
    cases = [({"hyperparameters": {"n_epochs": 2}, "method": dpo(beta=0.2)}, "hyperparameters"),
             ({"method": {"type": "dpo", "supervised": {"hyperparameters": {"n_epochs": 2}}}}, "method.supervised"),
             ({"method": dpo(n_epochs=0)}, "method.dpo.hyperparameters.n_epochs"),
             ({"method": dpo(prompt_loss_weight=0.1)}, None)]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=training.id, **extra)
        if param is not None:
            assert refused.value.body["param"] == param, (extra, refused.value.body)


def test_a_supervised_file_fails_a_dpo_jobs_validation_and_a_preference_file_a_supervised_one(client):
    for data, method in ((jsonl(COLOR_EXAMPLES), dpo()), (jsonl(COLOR_PREFERENCES), {"type": "supervised"})):
        job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client, data).id, method=method)
        job = wait_until_finished(client, job.id)
        assert job.status == "failed" and job.error.param == "training_file", job.error
        assert f"{method['type']} fine-tuning needs" in job.error.message, job.error.message


def test_a_dpo_job_continues_a_supervised_fine_tune(client):
    supervised = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client, jsonl(COLOR_EXAMPLES)).id,
                                                method={"type": "supervised", "supervised": {
                                                    "hyperparameters": {"n_epochs": 3, "batch_size": 4}}})
    supervised = wait_until_finished(client, supervised.id)
    assert supervised.status == "succeeded", supervised.error
    job = client.fine_tuning.jobs.create(model=supervised.fine_tuned_model, method=dpo(beta=0.5, n_epochs=1, batch_size=4),
                                         training_file=upload(client, jsonl(COLOR_PREFERENCES)).id)
    job = wait_until_finished(client, job.id)
    assert job.status == "succeeded", job.error
    first = min((e for e in client.fine_tuning.jobs.list_events(job.id) if e.type == "metrics"), key=lambda e: e.data["step"])
    assert first.data["train_loss"] == pytest.approx(math.log(2), abs=1e-4)  # its reference: the supervised model
    assert job.method.dpo.hyperparameters.training_type == "lora"
