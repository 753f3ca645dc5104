"""The guide's Marv walkthrough through the official openai client against a real server, on a
tiny in-process model (seconds), and on the real embedded SmolLM2 (slow)."""

from __future__ import annotations

import re
import sys

import httpx
import pytest
from openai.types import FileObject, Model
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from tests.helpers import REPO, SAMPLE_DATA, TINY_MODEL

sys.path.insert(0, str(REPO / "examples"))
import marv_walkthrough  # noqa: E402

MARV = SAMPLE_DATA / "marv.jsonl"
QUESTION = [{"role": "system", "content": marv_walkthrough.MARV_SYSTEM},
            {"role": "user", "content": "What's the capital of France?"}]


def raw(client, path: str, **params) -> dict:
    """The server's JSON as sent, to check it against the SDK's types strictly."""
    response = httpx.get(str(client.base_url).rstrip("/") + path, params=params,
                         headers={"Authorization": f"Bearer {client.api_key}"})
    assert response.status_code == 200, response.text
    return response.json()


def raw_pages(client, path: str, limit: int = 7) -> list[dict]:
    """Every item of a list endpoint, following `after` page by page."""
    items: list[dict] = []
    page = raw(client, path, limit=limit)
    while True:
        items += page["data"]
        if not page["has_more"]:
            return items
        page = raw(client, path, limit=limit, after=page["data"][-1]["id"])


def greedy(client, model: str) -> str:
    answer = client.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=20)
    return answer.choices[0].message.content


def check_walkthrough(client, result: dict, base_model: str) -> None:
    job = result["job"]
    # Status moved forward through the guide's states (fast steps may fall between two polls).
    order = ["validating_files", "queued", "running", "succeeded"]
    assert result["statuses"][-1] == "succeeded"
    assert [order.index(s) for s in result["statuses"]] == sorted(order.index(s) for s in result["statuses"])
    assert re.fullmatch(rf"ft:{re.escape(base_model)}:default:marv:{job.id[-8:]}", job.fine_tuned_model)
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at
    assert isinstance(job.hyperparameters.n_epochs, int) and isinstance(job.hyperparameters.batch_size, int)

    # Every object has the SDK's shape, checked strictly on the JSON the server sent.
    FileObject.model_validate(raw(client, f"/files/{result['file'].id}"))
    FineTuningJob.model_validate(raw(client, f"/fine_tuning/jobs/{job.id}"))
    events = raw_pages(client, f"/fine_tuning/jobs/{job.id}/events")
    assert [e["id"] for e in events] == [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=5)]
    for event in events:
        FineTuningJobEvent.model_validate(event)
    models = raw(client, "/models")["data"]
    for model in models:
        Model.model_validate(model)
    assert {base_model, job.fine_tuned_model} <= {m["id"] for m in models}
    chat = httpx.post(str(client.base_url).rstrip("/") + "/chat/completions", timeout=120,
                      headers={"Authorization": f"Bearer {client.api_key}"},
                      json={"model": job.fine_tuned_model, "messages": QUESTION, "max_tokens": 8})
    ChatCompletion.model_validate(chat.json())
    assert len(result["events"].data) == 10

    # One metrics event per step, and the model learned: the last loss is below the first.
    metrics = sorted((e for e in events if e["type"] == "metrics"), key=lambda e: e["data"]["step"])
    steps = [e["data"]["step"] for e in metrics]
    assert steps == list(range(1, metrics[-1]["data"]["total_steps"] + 1))
    assert metrics[-1]["data"]["train_loss"] < metrics[0]["data"]["train_loss"]

    completion = result["completion"]
    assert completion.model == job.fine_tuned_model
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_walkthrough_on_a_tiny_model(client):
    result = marv_walkthrough.run(client, str(MARV), TINY_MODEL, poll_seconds=0.2,
                                  hyperparameters={"n_epochs": 4, "learning_rate_multiplier": 5})
    check_walkthrough(client, result, TINY_MODEL)
    # The fine-tuned model answers from base + adapter, not as the base does.
    assert greedy(client, result["job"].fine_tuned_model) != greedy(client, TINY_MODEL)


@pytest.mark.slow
def test_walkthrough_on_the_embedded_smollm2(smol_server):
    client = smol_server.client()
    result = marv_walkthrough.run(client, str(MARV))
    print(f"\nSmolLM2 Marv walkthrough: {result['seconds']:.1f} s from upload to the first fine-tuned answer")
    check_walkthrough(client, result, "SmolLM2-135M-Instruct")
    tuned = greedy(client, result["job"].fine_tuned_model)
    assert "Paris" in tuned
    assert tuned != greedy(client, "SmolLM2-135M-Instruct")
