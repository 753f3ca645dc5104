"""Reading a training file: one JSON object per line, in the chat format (`messages`) or the
legacy prompt/completion format. The file is read line by line, so memory stays bounded by the
longest line, and every problem names its 1-based line and a stable code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_EXAMPLES = 10  # as OpenAI: fewer is refused
MAX_LINE_BYTES = 4 * 1024 * 1024  # one example
CHAT_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based; 0 for the file as a whole
    code: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.message} [{self.code}]"


@dataclass
class Report:
    format: str | None = None  # "chat" | "prompt_completion"
    examples: int = 0
    errors: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def iter_examples(path: Path) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """Each non-blank line as (line number, parsed object or the Problem that stops it)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            if len(raw) > MAX_LINE_BYTES:
                yield number, Problem(number, "line_too_long", f"line is over {MAX_LINE_BYTES} bytes")
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield number, Problem(number, "invalid_utf8", "line is not valid UTF-8")
                continue
            except json.JSONDecodeError as exc:
                yield number, Problem(number, "invalid_json", f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                yield number, Problem(number, "not_an_object", "each line must be a JSON object")
                continue
            yield number, obj


def example_format(obj: dict[str, Any]) -> str | None:
    if "messages" in obj:
        return "chat"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    return None


def check_example(number: int, obj: dict[str, Any]) -> list[Problem]:
    kind = example_format(obj)
    if kind == "chat":
        return _check_chat(number, obj)
    if kind == "prompt_completion":
        return _check_prompt_completion(number, obj)
    return [Problem(number, "missing_messages", "example has neither 'messages' nor 'prompt'/'completion'")]


def validate_file(path: Path) -> Report:
    report = Report()
    for number, item in iter_examples(path):
        if isinstance(item, Problem):
            report.errors.append(item)
            continue
        kind = example_format(item)
        if report.format is None:
            report.format = kind
        elif kind is not None and kind != report.format:
            report.errors.append(Problem(number, "mixed_formats",
                                         f"{kind} example in a file of {report.format} examples"))
            continue
        problems = check_example(number, item)
        report.errors.extend(problems)
        if not problems:
            report.examples += 1
    if report.examples < MIN_EXAMPLES and not report.errors:
        report.errors.append(Problem(0, "too_few_examples",
                                     f"the file has {report.examples} examples; at least {MIN_EXAMPLES} are required"))
    return report


def load_examples(path: Path) -> list[dict[str, Any]]:
    """The examples of a file that validate_file() accepted."""
    return [item for _, item in iter_examples(path) if not isinstance(item, Problem)]


def _check_chat(number: int, obj: dict[str, Any]) -> list[Problem]:
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        return [Problem(number, "missing_messages", "'messages' must be a non-empty list")]
    problems: list[Problem] = []
    trained = 0
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append(Problem(number, "invalid_message", f"{where} must be an object"))
            continue
        role = message.get("role")
        if role not in CHAT_ROLES:
            problems.append(Problem(number, "unknown_role", f"{where} has unknown role {role!r}"))
            continue
        content = message.get("content")
        calls = message.get("tool_calls") or message.get("function_call")
        if content is None and not calls:
            problems.append(Problem(number, "missing_content", f"{where} has no content"))
        elif content is not None and not isinstance(content, (str, list)):
            problems.append(Problem(number, "invalid_content", f"{where} content must be a string or a list of parts"))
        if role == "assistant":
            weight = message.get("weight", 1)
            if weight not in (0, 1):
                problems.append(Problem(number, "invalid_weight", f"{where} weight must be 0 or 1"))
            trained += weight == 1
    if not problems and not trained:
        problems.append(Problem(number, "nothing_to_train", "example has no assistant message with weight 1"))
    return problems


def _check_prompt_completion(number: int, obj: dict[str, Any]) -> list[Problem]:
    problems = []
    for key in ("prompt", "completion"):
        if not isinstance(obj.get(key), str):
            problems.append(Problem(number, "invalid_content", f"'{key}' must be a string"))
    if not problems and not obj["completion"]:
        problems.append(Problem(number, "nothing_to_train", "'completion' is empty"))
    return problems
