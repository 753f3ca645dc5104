"""What a finished job leaves, seen through the official client: its last three epoch
checkpoints (each usable as a model), and the result CSV among its files."""

from __future__ import annotations

import csv
import io

import httpx
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from tests.helpers import TINY_MODEL, upload, wait_until_finished


def test_checkpoints_and_result_file(client):
    training, validation = upload(client), upload(client)
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=training.id, validation_file=validation.id,
                                         suffix="ckpt", method={"type": "supervised", "supervised": {
                                             "hyperparameters": {"n_epochs": 4, "batch_size": 4}}})
    job = wait_until_finished(client, job.id)
    assert job.status == "succeeded", job.error

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id, limit=2))  # pages through all
    assert [c.step_number for c in checkpoints] == [12, 9, 6]  # 3 steps an epoch; the last three epochs
    for checkpoint in checkpoints:
        FineTuningJobCheckpoint.model_validate(checkpoint.model_dump())
        assert checkpoint.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        assert checkpoint.metrics.full_valid_loss is not None and checkpoint.metrics.train_loss is not None
        answer = client.chat.completions.create(model=checkpoint.fine_tuned_model_checkpoint, max_tokens=5,
                                                messages=[{"role": "user", "content": "Hi"}])
        assert answer.model == checkpoint.fine_tuned_model_checkpoint
    listed = {m.id for m in client.models.list()}
    assert {c.fine_tuned_model_checkpoint for c in checkpoints} | {job.fine_tuned_model} <= listed

    (result_id,) = job.result_files
    result = client.files.retrieve(result_id)
    assert (result.purpose, result.filename) == ("fine-tune-results", "step_metrics.csv")
    rows = list(csv.DictReader(io.StringIO(client.files.content(result_id).text)))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert all(float(r["train_loss"]) > 0 and 0 <= float(r["train_accuracy"]) <= 1 for r in rows)
    assert any(r["valid_loss"] for r in rows)

    events = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    last = max(events, key=lambda e: e.data["step"])
    assert {"step", "total_steps", "train_loss", "train_mean_token_accuracy", "full_valid_loss",
            "full_valid_mean_token_accuracy"} <= set(last.data)
    assert last.message.startswith("Step 12/12: training loss=")
    # The job object shows the resolved hyperparameters.
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (4, 4)
    assert isinstance(job.hyperparameters.learning_rate_multiplier, float)


def test_checkpoints_of_an_unknown_job_are_404(client):
    response = httpx.get(str(client.base_url).rstrip("/") + "/fine_tuning/jobs/ftjob-nope/checkpoints",
                         headers={"Authorization": f"Bearer {client.api_key}"})
    assert response.status_code == 404 and response.json()["error"]["param"] == "fine_tuning_job_id"
