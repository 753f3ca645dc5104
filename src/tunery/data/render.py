"""Rendering examples into token ids and labels with the base model's own chat template.

Exactly the tokens of trained assistant messages (weight 1) carry loss, their end-of-turn token
included; system/user/tool content, weight-0 messages and template scaffolding are labelled
IGNORE. The spans come from rendering the conversation prefix by prefix and mapping character
offsets back to tokens, so any template that renders prefixes consistently works unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE = -100  # label of a token that carries no loss (PyTorch's cross-entropy ignore_index)

# Used for models that ship without a chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


class RenderError(ValueError):
    pass


def render_example(tokenizer, example: dict[str, Any], *, max_length: int) -> Rendered:
    if "messages" in example:
        return render_chat(tokenizer, example["messages"], max_length=max_length)
    return render_prompt_completion(tokenizer, example["prompt"], example["completion"], max_length=max_length)


def render_chat(tokenizer, messages: list[dict[str, Any]], *, max_length: int) -> Rendered:
    clean = [_template_message(m) for m in messages]
    text = _apply(tokenizer, clean, add_generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) != 1:
            continue
        before = _apply(tokenizer, clean[:index], add_generation_prompt=True)
        through = _apply(tokenizer, clean[: index + 1], add_generation_prompt=False)
        if not (text.startswith(through) and through.startswith(before)):
            raise RenderError("the chat template does not render conversations prefix by prefix")
        spans.append((len(before), _end_of_turn(tokenizer, through, len(before))))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"][:max_length]  # truncation keeps the beginning
    labels = [
        token if any(start <= a < end for start, end in spans) else IGNORE
        for token, (a, _b) in zip(ids, encoded["offset_mapping"])
    ]
    return Rendered(ids, labels)


def render_prompt_completion(tokenizer, prompt: str, completion: str, *, max_length: int) -> Rendered:
    """Legacy format: the raw prompt, then the completion and end-of-text, which carry the loss."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + completion_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + completion_ids)[:max_length]
    return Rendered(ids, labels)


def render_generation_prompt(tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of a conversation followed by the assistant's turn opening, for generation."""
    text = _apply(tokenizer, [_template_message(m) for m in messages], add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _apply(tokenizer, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt,
        chat_template=tokenizer.chat_template or CHATML_TEMPLATE,
    )


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    """The message as templates expect it: text content, no training-only keys."""
    out = {k: v for k, v in message.items() if k != "weight" and v is not None}
    content = message.get("content")
    if isinstance(content, list):
        out["content"] = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    elif content is None:
        out["content"] = ""
    return out


def _end_of_turn(tokenizer, rendered: str, start: int) -> int:
    """Where the assistant turn starting at `start` ends: after its end-of-turn token when the
    template writes one, else after its last non-blank character."""
    eos = tokenizer.eos_token
    if eos and (at := rendered.find(eos, start)) != -1:
        return at + len(eos)
    return len(rendered.rstrip())
