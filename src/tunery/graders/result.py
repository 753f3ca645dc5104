"""What grading one sample gives (GraderResult): the reward, each sub-grader's, the error flags
OpenAI reports (protocol.graders.MetadataErrors) with a message for people, the judge models'
token usage and the judge's answer; and how a failure sets its flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunery.protocol.graders import MetadataErrors


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens, "cached_tokens": 0}


@dataclass
class GraderResult:
    """One grader's verdict on one sample. `reward` is 0 whenever a flag of `errors` is set."""
    name: str
    type: str
    reward: float = 0.0
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: MetadataErrors = field(default_factory=MetadataErrors)
    error: str | None = None  # what went wrong, for people
    execution_time: float = 0.0
    usage: dict[str, Usage] = field(default_factory=dict)  # judge model: tokens
    judge_answer: str | None = None  # a model grader's judge's answer as it wrote it
    label: str | None = None  # a label_model grader's label

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def sampled_model_name(self) -> str | None:
        return next(iter(self.usage), None)

    @property
    def token_usage(self) -> int | None:
        return sum(u.total_tokens for u in self.usage.values()) if self.usage else None

    def fail(self, flag: str, message: str, **details: Any) -> GraderResult:
        """Set an error flag (and its details fields), with the message; the reward is 0."""
        self.errors = self.errors.model_copy(update={flag: True, **details})
        self.error = self.error or message
        self.reward = 0.0
        return self

    def count(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        used = self.usage.setdefault(model, Usage())
        used.prompt_tokens += prompt_tokens
        used.completion_tokens += completion_tokens

    def absorb(self, sub: GraderResult) -> None:
        """A sub-grader's usage and failures become this one's too (its first details kept)."""
        for model, used in sub.usage.items():
            self.count(model, used.prompt_tokens, used.completion_tokens)
        if sub.failed:
            mine = self.errors.model_dump()
            self.errors = MetadataErrors(**{k: mine[k] or v for k, v in sub.errors.model_dump().items()})
            self.error = self.error or f"{sub.name}: {sub.error}"
            self.reward = 0.0
