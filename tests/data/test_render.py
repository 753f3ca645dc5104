"""Loss masks on the real SmolLM2 tokenizer: decoding the labelled tokens gives back exactly the
trained assistant text, each followed by its end-of-turn token, and nothing else."""

from __future__ import annotations

import copy

import pytest

from tests.helpers import FUNCTION_EXAMPLE, TOOL_EXAMPLE
from tunery.data.render import IGNORE, render_chat, render_example, render_generation_prompt
from tunery.data.tools import parse_tool_calls

END = "<|im_end|>"


def trained_text(tokenizer, rendered) -> list[str]:
    """The labelled tokens decoded, one string per contiguous labelled run."""
    runs, current = [], []
    for token, label in zip(rendered.input_ids, rendered.labels):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def test_only_trained_assistant_turns_carry_loss(smol_tokenizer):
    messages = [
        {"role": "system", "content": "Marv is sarcastic."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris, obviously.", "weight": 0},
        {"role": "user", "content": "And of Japan?"},
        {"role": "assistant", "content": "Tokyo. Try a map."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "Any time, sadly."},
    ]
    rendered = render_chat(smol_tokenizer, messages, max_length=4096)
    assert trained_text(smol_tokenizer, rendered) == [f"Tokyo. Try a map.{END}", f"Any time, sadly.{END}"]
    assert len(rendered.input_ids) == len(rendered.labels)
    # The whole conversation is in the input, template scaffolding included.
    text = smol_tokenizer.decode(rendered.input_ids)
    assert "Paris, obviously." in text and "<|im_start|>assistant" in text


def test_content_given_as_text_parts_renders_like_a_string(smol_tokenizer):
    as_string = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}]
    assert render_chat(smol_tokenizer, as_parts, max_length=512) == render_chat(smol_tokenizer, as_string, max_length=512)


def test_truncation_keeps_the_beginning(smol_tokenizer):
    messages = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "done"}]
    full = render_chat(smol_tokenizer, messages, max_length=4096)
    cut = render_chat(smol_tokenizer, messages, max_length=20)
    assert cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]
    assert cut.trained_tokens == 0  # the answer fell past the limit


def test_prompt_completion_trains_the_completion_and_weighs_the_prompt_lightly(smol_tokenizer):
    example = {"prompt": "Ticket: app crashes\n\n###\n\n", "completion": " technical"}
    rendered = render_example(smol_tokenizer, example, max_length=512)
    full = [t for t, w in zip(rendered.input_ids, rendered.weights) if w == 1.0]
    light = [t for t, w in zip(rendered.input_ids, rendered.weights) if w == 0.01]
    assert smol_tokenizer.decode(full) == " technical" + smol_tokenizer.eos_token
    assert smol_tokenizer.decode(light) == example["prompt"]
    assert rendered.trained_tokens == len(full)
    unweighted = render_example(smol_tokenizer, example, max_length=512, prompt_loss_weight=0)
    assert trained_text(smol_tokenizer, unweighted) == [" technical" + smol_tokenizer.eos_token]


CALL_TEXT = '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Oslo"}}\n</tool_call>'


@pytest.mark.parametrize("example", [TOOL_EXAMPLE, FUNCTION_EXAMPLE], ids=["tools", "functions"])
def test_tool_calls_are_trained_as_the_template_renders_them(smol_tokenizer, example):
    rendered = render_example(smol_tokenizer, example, max_length=4096)
    assert trained_text(smol_tokenizer, rendered) == [f"{CALL_TEXT}{END}", f"It is -3 degrees.{END}"]
    text = smol_tokenizer.decode(rendered.input_ids)
    assert '"name": "get_current_weather", "parameters"' in text.split("<|im_start|>user")[0]  # definitions in the system turn
    assert "<|im_start|>tool\n-3" in text or "<|im_start|>function\n-3" in text  # results carry no loss


def test_weight_zero_tool_call_carries_no_loss(smol_tokenizer):
    example = copy.deepcopy(TOOL_EXAMPLE)
    example["messages"][1]["weight"] = 0
    assert trained_text(smol_tokenizer, render_example(smol_tokenizer, example, max_length=4096)) == [
        f"It is -3 degrees.{END}"]


def test_the_model_answer_parses_back_into_calls():
    content, calls = parse_tool_calls(f"Let me check.\n{CALL_TEXT}")
    assert content == "Let me check."
    assert calls == [{"name": "get_current_weather", "arguments": '{"location": "Oslo"}'}]
    assert parse_tool_calls("no calls here") == ("no calls here", [])


TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTOOLS {{ tools | map(attribute='function') | map(attribute='name') | join(',') }}"
    "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}"
    "{% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_that_renders_tools_receives_them_natively(smol_tokenizer):
    tokenizer = copy.deepcopy(smol_tokenizer)
    tokenizer.chat_template = TOOL_TEMPLATE
    rendered = render_example(tokenizer, FUNCTION_EXAMPLE, max_length=4096)
    assert trained_text(tokenizer, rendered) == [f'CALL get_current_weather {{"location": "Oslo"}}{END}',
                                                 f"It is -3 degrees.{END}"]
    text = tokenizer.decode(rendered.input_ids)
    assert text.startswith("<|im_start|>system\nTOOLS get_current_weather")
    assert "<|im_start|>tool\n-3" in text  # a function result becomes a tool message


def test_generation_prompt_is_the_training_render_up_to_the_answer(smol_tokenizer):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    prompt = render_generation_prompt(smol_tokenizer, messages[:2])
    rendered = render_chat(smol_tokenizer, messages, max_length=512)
    assert rendered.input_ids[: len(prompt)] == prompt
    assert rendered.labels[len(prompt) - 1] == IGNORE and rendered.labels[len(prompt)] != IGNORE


def test_a_model_without_a_chat_template_gets_chatml(smol_tokenizer):
    tokenizer = copy.deepcopy(smol_tokenizer)
    tokenizer.chat_template = None
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rendered = render_chat(tokenizer, messages, max_length=512)
    assert tokenizer.decode(rendered.input_ids) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    assert trained_text(tokenizer, rendered) == [f"Hello{END}"]
