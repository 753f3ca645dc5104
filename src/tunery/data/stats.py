"""Token accounting for a training file with a base model's own tokenizer, and the checks that
depend on the model: examples longer than its context (warned: they will be truncated), and
examples that cannot be rendered or keep nothing to train on once truncated (errors).
check_file() is the whole check of a file against a model, for jobs and `tunery validate` alike.

A preference (DPO) pair is two sequences, the input followed by each output, and trains on both
outputs: its tokens are those of both sequences (the input counted in each, as training reads
it), its trained tokens those of both outputs; each sequence is held against the context alone.
The input's and each output's tokens are counted on their own too."""

from __future__ import annotations

import statistics
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunery.data.formats import NOTHING_TO_TRAIN, TOO_LONG, Problem
from tunery.data.render import IGNORE, Rendered, RenderError, render_chat, render_example, render_generation_prompt
from tunery.data.tools import function_specs
from tunery.data.validate import Report, finish_report, iter_valid_examples

RENDER_FAILED = "render_failed"
PREFERENCE_ONLY = ("input_tokens_per_example", "preferred_tokens_per_example", "non_preferred_tokens_per_example")
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
    messages_per_example: Distribution | None  # chat data; preference data: the input's messages
    tokens_per_example: Distribution | None  # before truncation (a preference pair: both sequences)
    trained_tokens_per_example: Distribution | None  # tokens that carry loss (after truncation; a pair: both outputs)
    too_long: int  # examples over the context, which training truncates (a pair: either sequence)
    tokens: int  # all tokens the model reads per epoch (after truncation)
    # Preference data only (None otherwise), before truncation: the input as the model is prompted
    # with it (with the assistant turn's opening), and the trained tokens of each output.
    input_tokens_per_example: Distribution | None = None
    preferred_tokens_per_example: Distribution | None = None
    non_preferred_tokens_per_example: Distribution | None = None

    def as_dict(self) -> dict[str, Any]:
        """The preference-only distributions appear for preference data only."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in PREFERENCE_ONLY}


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
    inputs, preferred, non_preferred = array("l"), array("l"), array("l")
    read_tokens = too_long = 0
    for number, example in iter_valid_examples(path, report):
        try:
            sequences = _render_for_stats(tokenizer, example)
        except RenderError as exc:
            report.error(Problem(number, RENDER_FAILED, str(exc)))
            continue
        counts = [len(r.input_ids) for r in sequences]
        kept = [_trained_within(r, context_length) for r in sequences]
        if max(counts) > context_length:
            too_long += 1
            report.warn(Problem(number, TOO_LONG, f"{max(counts)} tokens, more than the model's context of "
                                f"{context_length}; training keeps the first {context_length}"))
            if min(kept) == 0:  # a pair's outputs begin at the same place: both are past the context
                report.error(Problem(number, NOTHING_TO_TRAIN, f"nothing to train on within the first "
                                     f"{context_length} tokens (the model's context)"))
                continue
        if "messages" in example or "input" in example:
            messages.append(len(example.get("messages") or example["input"]["messages"]))
        if "input" in example:
            inputs.append(_input_tokens(tokenizer, example))
            preferred.append(sequences[0].trained_tokens)
            non_preferred.append(sequences[1].trained_tokens)
        tokens.append(sum(counts))
        trained.append(sum(kept))
        read_tokens += sum(min(count, context_length) for count in counts)
    return TokenStats(
        examples=len(tokens), context_length=context_length, messages_per_example=Distribution.of(messages),
        tokens_per_example=Distribution.of(tokens), trained_tokens_per_example=Distribution.of(trained),
        too_long=too_long, tokens=read_tokens, input_tokens_per_example=Distribution.of(inputs),
        preferred_tokens_per_example=Distribution.of(preferred),
        non_preferred_tokens_per_example=Distribution.of(non_preferred),
    )


def _render_for_stats(tokenizer, example: dict[str, Any]) -> list[Rendered]:
    """The sequences an example trains as, unbounded: one; a preference pair two, the input
    followed by the preferred and by the non-preferred output (earlier assistant turns of the
    input are context, not trained)."""
    if "input" in example:
        given = example["input"]
        context = [dict(m, weight=0) if m.get("role") == "assistant" else m for m in given["messages"]]
        specs = function_specs(given)
        return [render_chat(tokenizer, context + example[key], specs=specs, max_length=UNBOUNDED)
                for key in ("preferred_output", "non_preferred_output")]
    return [render_example(tokenizer, example, max_length=UNBOUNDED)]


def _trained_within(rendered: Rendered, context_length: int) -> int:
    """Tokens trained at full weight among the first context_length (training truncates there)."""
    weights = rendered.weights or [1.0] * len(rendered.input_ids)
    return sum(label != IGNORE and w == 1.0 for label, w in zip(rendered.labels[:context_length], weights))


def _input_tokens(tokenizer, example: dict[str, Any]) -> int:
    """A preference pair's input as the model is prompted with it: its messages and the opening
    of the assistant's turn."""
    given = example["input"]
    return len(render_generation_prompt(tokenizer, given["messages"], function_specs(given)))


def _percentile(ordered: list[int], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 2)
