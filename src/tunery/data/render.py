"""Rendering examples into token ids and labels with the base model's own chat template.

Exactly the tokens of trained assistant messages (weight 1) carry loss, their end-of-turn token
and their function/tool calls included; system/user/tool content, weight-0 messages and template
scaffolding are labelled IGNORE. The spans come from rendering the conversation prefix by prefix
and mapping character offsets back to tokens, so any template that renders prefixes
consistently works unchanged. Legacy prompt/completion examples train on the completion, and on
the prompt with the small `prompt_loss_weight`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunery.data.tools import function_specs, native_messages, template_renders_tools, text_messages

IGNORE = -100  # label of a token that carries no loss (PyTorch's cross-entropy ignore_index)
DEFAULT_PROMPT_LOSS_WEIGHT = 0.01  # the legacy API's default

# Used for models that ship without a chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss
    weights: list[float] | None = None  # per-token loss weight where not all labelled tokens weigh 1

    @property
    def trained_tokens(self) -> int:
        """Tokens trained at full weight."""
        if self.weights is None:
            return sum(label != IGNORE for label in self.labels)
        return sum(label != IGNORE and w == 1.0 for label, w in zip(self.labels, self.weights))


class RenderError(ValueError):
    pass


def render_example(tokenizer, example: dict[str, Any], *, max_length: int,
                   prompt_loss_weight: float = DEFAULT_PROMPT_LOSS_WEIGHT) -> Rendered:
    if "messages" in example:
        return render_chat(tokenizer, example["messages"], specs=function_specs(example), max_length=max_length)
    return render_prompt_completion(tokenizer, example["prompt"], example["completion"], max_length=max_length,
                                    prompt_loss_weight=prompt_loss_weight)


def render_chat(tokenizer, messages: list[dict[str, Any]], *, max_length: int,
                specs: list[dict[str, Any]] | None = None) -> Rendered:
    specs = specs or []
    text = _apply(tokenizer, messages, specs, add_generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) != 1:
            continue
        before = _apply(tokenizer, messages[:index], specs, add_generation_prompt=True)
        through = _apply(tokenizer, messages[: index + 1], specs, add_generation_prompt=False)
        if not (text.startswith(through) and through.startswith(before)):
            raise RenderError(f"the chat template does not render messages[{index}] after the messages before it "
                              "(does the conversation start with an assistant message?)")
        spans.append((len(before), _end_of_turn(tokenizer, through, len(before))))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"][:max_length]  # truncation keeps the beginning
    labels = [
        token if any(start <= a < end for start, end in spans) else IGNORE
        for token, (a, _b) in zip(ids, encoded["offset_mapping"])
    ]
    return Rendered(ids, labels)


def render_prompt_completion(tokenizer, prompt: str, completion: str, *, max_length: int,
                             prompt_loss_weight: float = DEFAULT_PROMPT_LOSS_WEIGHT) -> Rendered:
    """Legacy format: the raw prompt, then the completion and end-of-text."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + completion_ids)[:max_length]
    if prompt_loss_weight > 0:
        labels = ids[:]
        weights = ([prompt_loss_weight] * len(prompt_ids) + [1.0] * len(completion_ids))[:max_length]
        return Rendered(ids, labels, weights)
    return Rendered(ids, ([IGNORE] * len(prompt_ids) + completion_ids)[:max_length])


def render_generation_prompt(tokenizer, messages: list[dict[str, Any]],
                             specs: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids of a conversation followed by the assistant's turn opening, for generation."""
    text = _apply(tokenizer, messages, specs or [], add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _apply(tokenizer, messages: list[dict[str, Any]], specs: list[dict[str, Any]], *,
           add_generation_prompt: bool) -> str:
    template = tokenizer.chat_template or CHATML_TEMPLATE
    messages = [_template_message(m) for m in messages]
    extra: dict[str, Any] = {}
    if template_renders_tools(template):
        messages = native_messages(messages)
        if specs:
            extra["tools"] = [{"type": "function", "function": s} for s in specs]
    else:
        messages = text_messages(messages, specs)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         chat_template=template, **extra)


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
