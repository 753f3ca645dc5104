"""Chat completions through the official client on the tiny model: streaming gives the very text
and usage of the plain answer, stop sequences, n with a seed, logprobs, penalties, and OpenAI's
errors for bad requests."""

from __future__ import annotations

import threading
import time

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.helpers import TINY_MODEL, upload

HELLO = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello"}]


def chat(client, **options):
    return client.chat.completions.create(**({"model": TINY_MODEL, "messages": HELLO, "max_tokens": 12} | options))


def test_streamed_text_and_usage_equal_the_plain_answer(client):
    plain = chat(client, temperature=0)
    ChatCompletion.model_validate(plain.model_dump())
    chunks = list(chat(client, temperature=0, stream=True, stream_options={"include_usage": True}))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk.model_dump())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens


def test_stop_sequences_are_honoured_and_left_out(client):
    free = chat(client, temperature=0).choices[0].message.content
    stop = free[2:4]
    cut = chat(client, temperature=0, stop=stop).choices[0]
    assert cut.message.content == free[:free.index(stop)] and cut.finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in chat(client, temperature=0, stop=[stop], stream=True)
                       if c.choices)
    assert streamed == cut.message.content


def test_n_choices_with_a_seed_repeat_and_max_tokens_ends_with_length(client):
    first = chat(client, n=3, seed=5, temperature=1.0, max_completion_tokens=5)
    again = chat(client, n=3, seed=5, temperature=1.0, max_completion_tokens=5)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1, 2] and len({c.message.content for c in first.choices}) > 1
    assert all(c.finish_reason in ("length", "stop") for c in first.choices)
    assert first.usage.completion_tokens <= 15


def test_logprobs_and_top_logprobs(client):
    answer = chat(client, temperature=0, logprobs=True, top_logprobs=3, max_tokens=4).choices[0]
    content = answer.logprobs.content
    assert 1 <= len(content) <= 4
    assert "".join(t.token for t in content) == answer.message.content
    for token in content:
        assert len(token.top_logprobs) == 3 and token.top_logprobs[0].logprob == pytest.approx(token.logprob)
        assert bytes(token.bytes).decode("utf-8", "replace") == token.token


def test_penalties_change_what_greedy_decoding_repeats(client):
    plain = chat(client, temperature=0, max_tokens=120, logprobs=True).choices[0]
    tokens = [t.token for t in plain.logprobs.content]
    assert len(set(tokens)) < len(tokens)  # greedy decoding repeats itself: there is something to penalise
    penalised = chat(client, temperature=0, max_tokens=120, frequency_penalty=2.0, presence_penalty=2.0)
    assert penalised.choices[0].message.content != plain.message.content


def test_a_conversation_with_tool_calls_and_results_is_answered(client):
    tools = [{"type": "function", "function": {"name": "get_current_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}}}}]
    messages = HELLO + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_current_weather", "arguments": '{"location": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'}]
    answer = chat(client, messages=messages, tools=tools, temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, tools=tools, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert caught.value.body["param"] == "tool_choice"
    # A demanded call: the answer starts as one (the tiny model then writes what it will).
    forced = chat(client, tools=tools, tool_choice="required", temperature=0).choices[0]
    assert forced.finish_reason == "tool_calls" or forced.message.content.startswith('<tool_call>\n{"name": "')


@pytest.mark.parametrize("options, param, code", [
    ({"messages": []}, "messages", None),
    ({"model": "ft:unknown"}, "model", "model_not_found"),
    ({"messages": [{"role": "user", "content": "word " * 1100}]}, "messages", "context_length_exceeded"),
    ({"max_tokens": 2000}, "messages", "context_length_exceeded"),
    ({"top_logprobs": 2}, "top_logprobs", None),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs", None),
    ({"n": 0}, "n", None),
    ({"temperature": -1}, "temperature", None),
    ({"frequency_penalty": 2.5}, "frequency_penalty", None),
])
def test_bad_requests_get_openais_errors(client, options, param, code):
    error = openai.NotFoundError if code == "model_not_found" else openai.BadRequestError
    with pytest.raises(error) as caught:
        chat(client, **options)
    assert caught.value.body["param"] == param and caught.value.body["code"] == code


def test_simultaneous_streams_are_decoded_together(client):
    """Four streams started at once all produce their first tokens before any of them ends: they
    are decoded together, not queued one after another."""
    spans: dict[int, tuple[float, float, int]] = {}

    def run(seed: int) -> None:
        times = [time.perf_counter() for c in chat(client, seed=seed, temperature=1.0, max_tokens=150, stream=True)
                 if c.choices and c.choices[0].delta.content]
        spans[seed] = (times[0], times[-1], len(times))

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    long_ones = [span for span in spans.values() if span[2] >= 50]  # a stream may end early on its own
    assert len(long_ones) >= 2, spans
    assert max(first for first, _, _ in long_ones) < min(last for _, last, _ in long_ones)


def test_the_api_answers_while_a_job_trains(client):
    before = chat(client, temperature=0).choices[0].message.content
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client).id,
                                         hyperparameters={"n_epochs": 50, "batch_size": 1})
    deadline = time.time() + 60
    while client.fine_tuning.jobs.retrieve(job.id).status != "running":
        assert time.time() < deadline
        time.sleep(0.05)
    assert chat(client, temperature=0).choices[0].message.content == before  # the same greedy answer, mid-training
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # both at once
    client.fine_tuning.jobs.cancel(job.id)
