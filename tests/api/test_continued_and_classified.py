"""Continuing from a fine-tuned model or checkpoint, and the legacy classification metrics,
through the official client."""

from __future__ import annotations

import csv
import io
import json
import math

import openai
import pytest

from tests.helpers import TINY_MODEL, upload, wait_until_finished

SENTIMENT = [("I love it", " positive"), ("Great value", " positive"), ("Works perfectly", " positive"),
             ("Fantastic", " positive"), ("So happy with it", " positive"), ("Broke in a day", " negative"),
             ("Terrible", " negative"), ("Waste of money", " negative"), ("Never again", " negative"),
             ("Awful support", " negative")]


def sentiment_file(client, rows=SENTIMENT):
    lines = [json.dumps({"prompt": f"Review: {text}\n\n###\n\n", "completion": label}) for text, label in rows]
    return upload(client, "\n".join(lines).encode())


def train(client, **options):
    job = client.fine_tuning.jobs.create(**options)
    job = wait_until_finished(client, job.id)
    assert job.status == "succeeded", job.error
    return job


def test_continuing_from_a_fine_tuned_model_and_from_a_checkpoint(client):
    parent = train(client, model=TINY_MODEL, training_file=upload(client).id, suffix="parent",
                   hyperparameters={"n_epochs": 6, "batch_size": 4, "learning_rate_multiplier": 10})
    child = train(client, model=parent.fine_tuned_model, training_file=upload(client).id, suffix="child",
                  hyperparameters={"n_epochs": 1, "batch_size": 4})
    assert child.model == parent.fine_tuned_model
    assert child.fine_tuned_model.startswith(f"ft:{TINY_MODEL}:default:child:")  # the original base stays
    assert child.hyperparameters.training_type == "lora"

    # The child starts from the parent's weights: its first loss is near the parent's last.
    def losses(job):
        events = sorted((e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"
                         and "train_loss" in e.data), key=lambda e: e.data["step"])
        return [e.data["train_loss"] for e in events]

    parent_losses = losses(parent)
    assert parent_losses[-1] < 0.7 * parent_losses[0]
    assert losses(child)[0] < 0.8 * parent_losses[0]

    checkpoint = next(iter(client.fine_tuning.jobs.checkpoints.list(parent.id))).fine_tuned_model_checkpoint
    from_checkpoint = train(client, model=checkpoint, training_file=upload(client).id,
                            hyperparameters={"n_epochs": 1, "batch_size": 4, "training_type": "full"})
    assert from_checkpoint.hyperparameters.training_type == "full"
    answer = client.chat.completions.create(model=from_checkpoint.fine_tuned_model, max_tokens=3,
                                            messages=[{"role": "user", "content": "Hi"}])
    assert answer.model == from_checkpoint.fine_tuned_model and answer.usage.completion_tokens >= 1

    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=from_checkpoint.fine_tuned_model, training_file=upload(client).id,
                                       hyperparameters={"training_type": "lora"})
    assert caught.value.body["param"] == "hyperparameters.training_type"


def test_classification_metrics_are_added_to_the_result_file_at_each_epoch(client):
    job = train(client, model=TINY_MODEL, training_file=sentiment_file(client).id,
                validation_file=sentiment_file(client).id,
                hyperparameters={"n_epochs": 2, "batch_size": 5},
                extra_body={"compute_classification_metrics": True, "classification_positive_class": " positive",
                            "classification_betas": [0.5, 2]})
    rows = list(csv.DictReader(io.StringIO(client.files.content(job.result_files[0]).text)))
    columns = {"classification/accuracy", "classification/weighted_f1_score", "classification/precision",
               "classification/recall", "classification/f0.5", "classification/f2.0", "classification/auroc",
               "classification/auprc"}
    assert columns <= set(rows[0])
    epoch_ends = [r for r in rows if r["classification/accuracy"]]
    assert [int(r["step"]) for r in epoch_ends] == [2, 4]
    assert all(0 <= float(r[c]) <= 1 for r in epoch_ends for c in columns)


@pytest.mark.parametrize("extra, param", [
    ({"compute_classification_metrics": True, "classification_positive_class": " positive"}, "validation_file"),
    ({"compute_classification_metrics": True}, "classification_n_classes"),
    ({"compute_classification_metrics": True, "classification_n_classes": 3, "classification_betas": [2]},
     "classification_betas"),
])
def test_classification_options_are_checked(client, extra, param):
    options = {"model": TINY_MODEL, "training_file": sentiment_file(client).id}
    if param != "validation_file":
        options["validation_file"] = options["training_file"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(**options, extra_body=extra)
    assert caught.value.body["param"] == param


def test_classification_metrics_need_prompt_completion_data(client):
    chat = upload(client)
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=chat.id, validation_file=chat.id,
                                         extra_body={"compute_classification_metrics": True, "classification_n_classes": 3})
    job = wait_until_finished(client, job.id)
    assert job.status == "failed" and job.error.code == "invalid_training_file"


def test_the_guides_classifier_recipe_answers_with_one_token_and_its_logprobs(client):
    """Spec 003: a prompt/completion classifier is asked with max_tokens=1 and logprobs=2."""
    job = train(client, model=TINY_MODEL, training_file=sentiment_file(client).id,
                seed=1, hyperparameters={"n_epochs": 20, "batch_size": 2, "training_type": "full",
                                         "learning_rate_multiplier": 60})  # 3e-3: the tiny model learns slowly
    for text, label in SENTIMENT:
        answer = client.completions.create(model=job.fine_tuned_model, prompt=f"Review: {text}\n\n###\n\n",
                                           max_tokens=1, logprobs=2, temperature=0)
        choice = answer.choices[0]
        assert choice.text == label and choice.finish_reason == "length"
        top = choice.logprobs.top_logprobs[0]
        assert len(top) == 2 and next(iter(top)) == label  # likeliest first
        assert choice.logprobs.tokens == [label] and choice.logprobs.token_logprobs[0] == pytest.approx(top[label])
        assert math.exp(top[label]) > 0.9
