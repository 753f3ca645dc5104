"""Token accounting for a training file with a base model's own tokenizer, and the checks that
depend on the model: examples longer than its context (warned: they will be truncated), and
examples that cannot be rendered or keep nothing to train on once truncated (errors).
check_file() is the whole check of a file against a model, for jobs and `tunery validate` alike."""

from __future__ import annotations

import statistics
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunery.data.formats import NOTHING_TO_TRAIN, TOO_LONG, Problem
from tunery.data.render import IGNORE, RenderError, render_example
from tunery.data.validate import Report, finish_report, iter_valid_examples

RENDER_FAILED = "render_failed"
UNBOUNDED = 10**9  # render without truncating, to count every token


@dataclass
class Distribution:
    min: int
    max: int
    mean: float
    median: float
    p5: float
    p95: float

    @classmethod
    def of(cls, values: array) -> Distribution | None:
        if not values:
            return None
        ordered = sorted(values)
        return cls(ordered[0], ordered[-1], round(statistics.fmean(ordered), 2), statistics.median(ordered),
                   _percentile(ordered, 5), _percentile(ordered, 95))


@dataclass
class TokenStats:
    examples: int
    context_length: int
    messages_per_example: Distribution | None  # chat and preference data
    tokens_per_example: Distribution | None  # before truncation
    trained_tokens_per_example: Distribution | None  # tokens that carry loss (after truncation)
    too_long: int  # examples over the context, which training truncates
    tokens: int  # all tokens the model reads per epoch (after truncation)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_file(path: Path, tokenizer, context_length: int) -> tuple[Report, TokenStats]:
    """A training file checked against a model: every format, file-level and model-specific
    problem in the report, and the token statistics of its valid examples."""
    report = Report()
    stats = token_stats(path, tokenizer, context_length, report)
    return finish_report(report), stats


def token_stats(path: Path, tokenizer, context_length: int, report: Report) -> TokenStats:
    """Validate the file and count its tokens in one streamed pass; model-specific problems go
    into the report (errors for examples that cannot train, warnings for truncated ones)."""
    messages, tokens, trained = array("l"), array("l"), array("l")
    read_tokens = too_long = 0
    for number, example in iter_valid_examples(path, report):
        try:
            rendered = _render_for_stats(tokenizer, example)
        except RenderError as exc:
            report.error(Problem(number, RENDER_FAILED, str(exc)))
            continue
        count = len(rendered.input_ids)
        kept = sum(label != IGNORE and w == 1.0 for label, w in
                   zip(rendered.labels[:context_length], rendered.weights or [1.0] * count))
        if count > context_length:
            too_long += 1
            report.warn(Problem(number, TOO_LONG, f"{count} tokens, more than the model's context of "
                                f"{context_length}; training keeps the first {context_length}"))
            if kept == 0:
                report.error(Problem(number, NOTHING_TO_TRAIN, f"nothing to train on within the first "
                                     f"{context_length} tokens (the model's context)"))
                continue
        if "messages" in example or "input" in example:
            messages.append(len(example.get("messages") or example["input"]["messages"]))
        tokens.append(count)
        trained.append(kept)
        read_tokens += min(count, context_length)
    return TokenStats(
        examples=len(tokens), context_length=context_length, messages_per_example=Distribution.of(messages),
        tokens_per_example=Distribution.of(tokens), trained_tokens_per_example=Distribution.of(trained),
        too_long=too_long, tokens=read_tokens,
    )


def _render_for_stats(tokenizer, example: dict[str, Any]):
    if "input" in example:  # preference data: the input followed by the preferred answer
        chat = {"messages": example["input"]["messages"] + example["preferred_output"],
                "tools": example["input"].get("tools")}
        return render_example(tokenizer, {k: v for k, v in chat.items() if v is not None}, max_length=UNBOUNDED)
    return render_example(tokenizer, example, max_length=UNBOUNDED)


def _percentile(ordered: list[int], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 2)
