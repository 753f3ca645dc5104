"""Loss masks on the real SmolLM2 tokenizer: decoding the labelled tokens gives back exactly the
trained assistant text, each followed by its end-of-turn token, and nothing else."""

from __future__ import annotations

from tunery.data.render import IGNORE, render_chat, render_example, render_generation_prompt

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


def test_prompt_completion_trains_the_completion_and_end_of_text(smol_tokenizer):
    rendered = render_example(smol_tokenizer, {"prompt": "Ticket: app crashes\n\n###\n\n", "completion": " technical"},
                              max_length=512)
    assert trained_text(smol_tokenizer, rendered) == [" technical" + smol_tokenizer.eos_token]


def test_generation_prompt_is_the_training_render_up_to_the_answer(smol_tokenizer):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    prompt = render_generation_prompt(smol_tokenizer, messages[:2])
    rendered = render_chat(smol_tokenizer, messages, max_length=512)
    assert rendered.input_ids[: len(prompt)] == prompt
    assert rendered.labels[len(prompt) - 1] == IGNORE and rendered.labels[len(prompt)] != IGNORE
