"""Completions runs through the official client: SmolLM2-135M-Instruct answers each item (a
template over the item, or the item's own messages) and the criteria grade its answers; a run
canceled after its first batch stops there; an item whose messages are no messages is errored
with the reason, and the others still run."""

from __future__ import annotations

import time

import openai
import pytest

from tests.evals.common import ANSWER_SCHEMA, EXACT, wait_for_run
from tests.helpers import TINY_MODEL

CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo")]
MENTIONS = EXACT | {"name": "mentions", "operation": "ilike"}  # the answer holds the capital, in any case


@pytest.mark.slow
def test_smollm2_answers_each_item_and_its_answers_are_graded(smol_server):
    client = smol_server.client()
    evaluation = client.evals.create(
        name="capitals", testing_criteria=[EXACT, MENTIONS],
        data_source_config={"type": "custom", "item_schema": ANSWER_SCHEMA, "include_sample_schema": True})
    template = [{"role": "system", "content": "Answer with the name of the city only."},
                {"role": "user", "content": "What is the capital of {{item.country}}?"}]
    run = client.evals.runs.create(evaluation.id, name="base", data_source={
        "type": "completions", "model": "SmolLM2-135M-Instruct",
        "input_messages": {"type": "template", "template": template},
        "sampling_params": {"temperature": 0, "max_completion_tokens": 12, "seed": 1},
        "source": {"type": "file_content", "content": [{"item": {"country": c, "answer": a}} for c, a in CAPITALS]}})
    assert run.model == "SmolLM2-135M-Instruct" and run.data_source.type == "completions"
    run = wait_for_run(client, evaluation.id, run.id, timeout=300)
    assert run.status == "completed", run.error
    counts = run.result_counts
    assert counts.total == 3 and counts.errored == 0 and counts.passed + counts.failed == 3
    usage = {u.model_name: u for u in run.per_model_usage}
    assert set(usage) == {"SmolLM2-135M-Instruct"} and usage["SmolLM2-135M-Instruct"].invocation_count == 3
    assert usage["SmolLM2-135M-Instruct"].prompt_tokens > 3 * 10 and usage["SmolLM2-135M-Instruct"].completion_tokens > 0

    items = list(client.evals.runs.output_items.list(run.id, eval_id=evaluation.id))
    assert [i.datasource_item_id for i in items] == [0, 1, 2]
    for item, (country, capital) in zip(items, CAPITALS):
        sample = item.sample
        assert sample.model == "SmolLM2-135M-Instruct" and sample.error is None
        assert [m.content for m in sample.input] == [template[0]["content"], f"What is the capital of {country}?"]
        answer = sample.output[0].content
        assert answer and sample.output[0].role == "assistant" and sample.finish_reason in ("stop", "length")
        assert 0 < sample.usage.completion_tokens <= 12 and sample.temperature == 0 and sample.seed == 1
        results = {r.name: r for r in item.results}
        assert results["exact"].passed == (answer == capital) and results["exact"].score == float(answer == capital)
        assert results["mentions"].passed == (capital.lower() in answer.lower())
        assert item.status == ("pass" if answer == capital else "fail")
    passed_exact = sum(i.sample.output[0].content == capital for i, (_, capital) in zip(items, CAPITALS))
    per_criteria = {r.testing_criteria: r.passed for r in run.per_testing_criteria_results}
    assert per_criteria["exact"] == passed_exact == counts.passed

    # the same eval, the item's own messages (item_reference), on the same model: the same prompts asked.
    # (Not the same answers to the letter: decoded in batches of other sizes, a near tie can go the other way.)
    again = client.evals.runs.create(evaluation.id, data_source={
        "type": "completions", "model": "SmolLM2-135M-Instruct",
        "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
        "sampling_params": {"temperature": 0, "max_completion_tokens": 12, "seed": 1},
        "source": {"type": "file_content", "content": [
            {"item": {"answer": a, "messages": [template[0], {"role": "user", "content": f"What is the capital of {c}?"}]}}
            for c, a in CAPITALS]}})
    again = wait_for_run(client, evaluation.id, again.id, timeout=300)
    asked = list(client.evals.runs.output_items.list(again.id, eval_id=evaluation.id))
    assert [[m.content for m in i.sample.input] for i in asked] == [[m.content for m in i.sample.input] for i in items]
    assert all(i.sample.output[0].content and i.sample.error is None for i in asked)


def test_a_canceled_run_stops_after_the_batch_it_was_in(client):
    evaluation = client.evals.create(data_source_config={"type": "custom", "item_schema": {"type": "object"}},
                                     testing_criteria=[EXACT | {"reference": "apple"}])
    total = 400
    run = client.evals.runs.create(evaluation.id, data_source={
        "type": "completions", "model": TINY_MODEL, "sampling_params": {"max_completion_tokens": 24},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.colour}}"}]},
        "source": {"type": "file_content", "content": [{"item": {"colour": f"red {i}"}} for i in range(total)]}})
    deadline = time.time() + 120
    while not client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, limit=1).data:
        assert time.time() < deadline and client.evals.runs.retrieve(run.id, eval_id=evaluation.id).status != "completed"
        time.sleep(0.05)
    canceled = client.evals.runs.cancel(run.id, eval_id=evaluation.id)
    assert canceled.status == "canceled"
    at_cancel = len(list(client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, limit=100)))
    time.sleep(3)  # longer than a batch takes: a batch under way would have been recorded by now
    done = len(list(client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, limit=100)))
    run = client.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    counts = run.result_counts
    assert run.status == "canceled" and 0 < done < total and done == at_cancel
    assert counts.total == total and counts.passed + counts.failed + counts.errored == done
    with pytest.raises(openai.ConflictError):
        client.evals.runs.cancel(run.id, eval_id=evaluation.id)
    # The canceled batch's generation was stopped: the engine goes on serving the next run.
    again = client.evals.runs.create(evaluation.id, data_source={
        "type": "completions", "model": TINY_MODEL, "sampling_params": {"max_completion_tokens": 4},
        "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.colour}}"}]},
        "source": {"type": "file_content", "content": [{"item": {"colour": "blue"}}]}})
    assert wait_for_run(client, evaluation.id, again.id, timeout=60).status == "completed"


def test_an_item_whose_messages_are_none_is_errored_and_the_others_run(client):
    evaluation = client.evals.create(data_source_config={"type": "custom", "item_schema": {"type": "object"}},
                                     testing_criteria=[EXACT | {"reference": "apple"}])
    items = [{"messages": [{"role": "user", "content": "red"}]}, {"messages": 7}, {"messages": [{"role": "critic"}]}]
    run = client.evals.runs.create(evaluation.id, data_source={
        "type": "completions", "model": TINY_MODEL, "sampling_params": {"max_completion_tokens": 4},
        "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
        "source": {"type": "file_content", "content": [{"item": item} for item in items]}})
    run = wait_for_run(client, evaluation.id, run.id)
    assert run.status == "completed" and run.result_counts.errored == 2
    assert run.result_counts.passed + run.result_counts.failed == 1
    first, second, third = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id)
    assert first.status in ("pass", "fail") and first.sample.output and first.results[0].name == "exact"
    assert second.status == "error" and second.results == [] and second.sample.error.code == "invalid_item"
    assert "Item 1" in second.sample.error.message and "list of {role, content}" in second.sample.error.message
    assert third.status == "error" and "Item 2" in third.sample.error.message and "role" in third.sample.error.message
