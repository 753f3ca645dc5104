"""Legacy /v1/completions through the official client: raw prompts, one choice per prompt,
stop sequences, n, echo, logprobs in the legacy shape, streaming, and out-of-range parameters
refused naming the param."""

from __future__ import annotations

import openai
import pytest
from openai.types import Completion

from tests.helpers import TINY_MODEL


def test_a_list_of_prompts_gets_one_choice_each(client):
    answer = client.completions.create(model=TINY_MODEL, prompt=["Ticket: late\n\n###\n\n", "Hello"], max_tokens=3,
                                       temperature=0)
    Completion.model_validate(answer.model_dump())
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.finish_reason in ("stop", "length") for c in answer.choices)
    assert answer.usage.completion_tokens <= 6 and answer.usage.prompt_tokens > 0
    again = client.completions.create(model=TINY_MODEL, prompt="Hello", max_tokens=3, temperature=0)
    assert again.choices[0].text == answer.choices[1].text  # greedy is deterministic


def test_stop_sequences_end_the_text_and_are_not_included(client):
    free = client.completions.create(model=TINY_MODEL, prompt="Hello", max_tokens=8, temperature=0).choices[0].text
    assert len(free) > 2
    stop = free[1:3]
    cut = client.completions.create(model=TINY_MODEL, prompt="Hello", max_tokens=8, temperature=0, stop=[stop]).choices[0]
    assert cut.text == free[: free.index(stop)] and cut.finish_reason == "stop"


@pytest.mark.parametrize("extra, param", [({"logprobs": 6}, "logprobs"), ({"n": 0}, "n"), ({"top_p": 0}, "top_p"),
                                          ({"temperature": 2.5}, "temperature"), ({"presence_penalty": 3}, "presence_penalty"),
                                          ({"stop": ["a", "b", "c", "d", "e"]}, "stop")])
def test_out_of_range_parameters_are_refused_naming_the_param(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=TINY_MODEL, prompt="Hello", max_tokens=1, **extra)
    assert caught.value.body["param"] == param


def test_logprobs_and_echo_in_the_legacy_shape(client):
    answer = client.completions.create(model=TINY_MODEL, prompt="Hello there", max_tokens=3, temperature=0, logprobs=2)
    Completion.model_validate(answer.model_dump())
    choice = answer.choices[0]
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 3
    assert "".join(logprobs.tokens) == choice.text and logprobs.text_offset[0] == 0
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) == 2 and logprob <= 0
        assert max(top.values()) == pytest.approx(logprob)  # greedy: the chosen token is the likeliest
    echoed = client.completions.create(model=TINY_MODEL, prompt="Hello there", max_tokens=3, temperature=0, logprobs=1,
                                       echo=True).choices[0]
    assert echoed.text == "Hello there" + choice.text
    assert echoed.logprobs.token_logprobs[0] is None and echoed.logprobs.tokens[-3:] == logprobs.tokens
    assert "".join(echoed.logprobs.tokens) == echoed.text


def test_n_with_a_seed_gives_the_same_choices_again_and_streaming_gives_the_same_text(client):
    options = {"model": TINY_MODEL, "prompt": "Hello", "max_tokens": 6, "temperature": 1, "seed": 11, "n": 3}
    first = [c.text for c in client.completions.create(**options).choices]
    assert first == [c.text for c in client.completions.create(**options).choices]
    assert len(set(first)) > 1  # each choice samples on its own
    streamed = {}
    for chunk in client.completions.create(**options, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert [streamed[i] for i in range(3)] == first


def test_a_request_asking_more_than_one_may_is_refused_and_others_are_served(client):
    """2,000 prompts x n=128 (256,000 completions from a few KB) would occupy the shared engine for
    minutes: refused before anything runs, naming what to lower."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=TINY_MODEL, prompt=["Hello"] * 2000, n=128, max_tokens=1)
    assert caught.value.body["param"] == "n" and "at most 128" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=TINY_MODEL, prompt=["Hello"] * 200, max_tokens=1)
    assert caught.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as caught:  # 100 completions of ~3,000 tokens: within the count, not the tokens
        client.chat.completions.create(model=TINY_MODEL, messages=[{"role": "user", "content": "hi " * 2000}], n=100,
                                       max_tokens=1000)
    assert caught.value.body["param"] == "max_tokens" and caught.value.body["code"] == "request_too_large"
    assert client.completions.create(model=TINY_MODEL, prompt=["Hello"] * 64, n=2, max_tokens=1).choices
