"""Model graders (score_model, label_model): the judge's messages from the grader's templates, the
judge's sampling parameters, and what its answer means: a score within the grader's range, or
one of its labels. The judge itself is whatever implements Judge: in tunery, a model it serves
called through its chat service (services/graders.py), so many gradings at once are batched by
the engine like any concurrent chats.

OpenAI's judges answer through structured outputs; tunery's models answer in free text, read as:
- score_model: a JSON object's "result" (or "score") when the answer is one, else the first
  number in the answer that lies within the range (an answer "7/10" for the range [0, 10] is 7);
  no such number is a model_grader_parse_error.
- label_model: a JSON object's "result" (or "label") when the answer is one, else the answer
  itself when it is a label (ignoring case, spaces and closing punctuation), else the label the
  answer names first (as a whole word, ignoring case); none is a model_grader_parse_error."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Protocol

from tunery.graders.templates import Sample, render
from tunery.protocol.graders import InputText, JudgeMessage, LabelModelGrader, OutputText, ScoreModelGrader

DEFAULT_RANGE = (0.0, 1.0)
JUDGE_MAX_TOKENS = 256  # a judge's answer when the grader does not say (label_model never does)
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class JudgeParams:
    """How the judge samples: the grader's sampling_params; what it leaves unset is greedy
    (temperature 0: a grade should not depend on chance), top_p 1 and JUDGE_MAX_TOKENS tokens."""
    max_tokens: int = JUDGE_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class JudgeAnswer:
    text: str
    prompt_tokens: int
    completion_tokens: int


class JudgeFailed(Exception):
    """The judge model could not answer (the server stopping, a prompt longer than its context)."""


class Judge(Protocol):
    async def __call__(self, model: str, messages: list[dict[str, str]], params: JudgeParams) -> JudgeAnswer: ...


class UnreadableAnswer(ValueError):
    """The judge's answer holds no score within the range, or no label."""


def messages(grader: ScoreModelGrader | LabelModelGrader, sample: Sample, item: Any) -> list[dict[str, str]]:
    """The judge's chat messages: each input message's text parts joined, templates filled in."""
    return [{"role": m.role, "content": render(_text(m), sample, item)} for m in grader.input]


def _text(message: JudgeMessage) -> str:
    parts = message.content if isinstance(message.content, list) else [message.content]
    return "\n".join(p if isinstance(p, str) else p.text for p in parts if isinstance(p, (str, InputText, OutputText)))


def reads_text_only(message: JudgeMessage) -> bool:
    """Whether a message is text only (the judges tunery serves read no images or audio)."""
    parts = message.content if isinstance(message.content, list) else [message.content]
    return all(isinstance(p, (str, InputText, OutputText)) for p in parts)


def params(grader: ScoreModelGrader | LabelModelGrader) -> JudgeParams:
    given = getattr(grader, "sampling_params", None)
    if given is None:
        return JudgeParams()
    return JudgeParams(max_tokens=given.max_completions_tokens or JUDGE_MAX_TOKENS,
                       temperature=0.0 if given.temperature is None else given.temperature,
                       top_p=1.0 if given.top_p is None else given.top_p, seed=given.seed)


def score_range(grader: ScoreModelGrader) -> tuple[float, float]:
    return (float(grader.range[0]), float(grader.range[1])) if grader.range else DEFAULT_RANGE


def read_score(answer: str, low: float, high: float) -> float:
    """The score an answer gives (see the module's docstring); UnreadableAnswer when none."""
    given = _json_field(answer, ("result", "score"))
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        candidates = [float(given)]
    else:
        candidates = [float(n) for n in NUMBER.findall(answer)]
    for score in candidates:
        if math.isfinite(score) and low <= score <= high:
            return score
    raise UnreadableAnswer(f"the judge's answer holds no score within [{low:g}, {high:g}]: {answer[:200]!r}")


def read_label(answer: str, labels: list[str]) -> str:
    """The label an answer gives (see the module's docstring); UnreadableAnswer when none."""
    folded = {label.casefold(): label for label in labels}
    given = _json_field(answer, ("result", "label"))
    if isinstance(given, str) and given.strip().casefold() in folded:
        return folded[given.strip().casefold()]
    whole = answer.strip().rstrip(".!").strip().strip("\"'*`").casefold()
    if whole in folded:
        return folded[whole]
    found = [(m.start(), -len(label), label) for label in labels
             for m in [re.search(rf"(?<!\w){re.escape(label.casefold())}(?!\w)", answer.casefold())] if m]
    if found:
        return min(found)[2]
    raise UnreadableAnswer(f"the judge's answer names none of the labels {labels}: {answer[:200]!r}")


def _json_field(answer: str, keys: tuple[str, ...]) -> Any:
    try:
        value = json.loads(answer)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, dict):
        return next((value[k] for k in keys if k in value), None)
    return None
