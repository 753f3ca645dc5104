"""Legacy /v1/completions through the official client: raw prompts, one choice per prompt,
stop sequences, and the parameters not served yet refused with a clear 400."""

from __future__ import annotations

import openai
import pytest
from openai.types import Completion

from tests.conftest import TINY_MODEL


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


@pytest.mark.parametrize("extra, param", [({"echo": True}, "echo"), ({"logprobs": 2}, "logprobs"),
                                          ({"stop": ["a", "b", "c", "d", "e"]}, "stop")])
def test_parameters_not_served_yet_are_refused(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=TINY_MODEL, prompt="Hello", max_tokens=1, **extra)
    assert caught.value.body["param"] == param
