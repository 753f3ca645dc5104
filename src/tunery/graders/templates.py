"""Templates in graders' texts, as OpenAI's graders write them: `{{item.x}}`, `{{item.a.b[0]}}`,
`{{sample.output_text}}`, `{{sample.output_json.x}}`, `{{sample.output_tools[0].function.name}}`,
and the two namespaces they read: the dataset item, and the sample (Sample: what the model
answered). Checking a template's syntax (check()) is apart from filling it in (render()), which
fails with the error OpenAI reports: a variable the item or sample lacks, or output_json asked of a
sample that is no JSON."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tunery.errors import InvalidRequest

NAMESPACES = ("item", "sample")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices")
PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
SEGMENT = re.compile(r"\.([^.\[\]\s]+)|\[(\d+)\]")
_MISSING = object()


class TemplateError(Exception):
    """A template could not be filled in; `flag` names OpenAI's error flag for it."""

    def __init__(self, message: str, flag: str):
        super().__init__(message)
        self.flag = flag


@dataclass
class Sample:
    """What a model answered, as graders see it (the `sample` namespace; a python grader's first
    argument): its text, its text read as JSON (absent when it is none), its tool calls and choices
    as the chat completions API shapes them."""
    output_text: str
    output_json: Any = _MISSING
    output_tools: list[dict] = field(default_factory=list)
    choices: list[dict] = field(default_factory=list)

    @classmethod
    def from_text(cls, text: str, tool_calls: list[dict] | None = None, finish_reason: str = "stop") -> Sample:
        """A sample that is the text (and tool calls) of one assistant message."""
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = _MISSING
        message = {"role": "assistant", "content": text} | ({"tool_calls": tool_calls} if tool_calls else {})
        return cls(text, parsed, list(tool_calls or []),
                   [{"index": 0, "message": message, "finish_reason": finish_reason}])

    def namespace(self) -> dict[str, Any]:
        """The sample as a plain dict (output_json None when the text is no JSON)."""
        return {"output_text": self.output_text, "output_json": None if self.output_json is _MISSING else self.output_json,
                "output_tools": self.output_tools, "choices": self.choices}


def _path(expression: str) -> tuple[str, list[str | int]] | None:
    """`namespace.a[0].b` as ("namespace", ["a", 0, "b"]); None when it is not one."""
    expression = expression.strip()
    namespace = re.match(r"[A-Za-z_]\w*", expression)
    if namespace is None:
        return None
    rest, steps = expression[namespace.end():], []
    while rest:
        step = SEGMENT.match(rest)
        if step is None:
            return None
        steps.append(step.group(1) if step.group(1) is not None else int(step.group(2)))
        rest = rest[step.end():]
    return namespace.group(), steps


def check(text: str, param: str) -> None:
    """Refuse (400 naming `param`) a text whose templates are not {{item...}} or {{sample.<field>...}}."""
    for placeholder in PLACEHOLDER.finditer(text):
        parsed = _path(placeholder.group(1))
        if parsed is None or parsed[0] not in NAMESPACES:
            raise InvalidRequest(f"The template {placeholder.group()!r} is not a variable of a namespace: write "
                                 f"{{{{item.<field>}}}} or {{{{sample.<field>}}}} (fields joined by '.', list "
                                 f"positions as [0]).", param=param)
        namespace, steps = parsed
        if namespace == "sample" and steps and steps[0] not in SAMPLE_FIELDS:
            raise InvalidRequest(f"The template {placeholder.group()!r} names no field of the sample: the sample has "
                                 f"{', '.join(SAMPLE_FIELDS)}.", param=param)


def lookup(expression: str, sample: Sample, item: Any) -> Any:
    """The value a template's variable stands for; TemplateError when there is none."""
    parsed = _path(expression)
    if parsed is None or parsed[0] not in NAMESPACES:
        raise TemplateError(f"{{{{{expression.strip()}}}}} is not a variable of the item or the sample",
                            "invalid_variable_error")
    namespace, steps = parsed
    if namespace == "sample" and steps[:1] == ["output_json"] and sample.output_json is _MISSING:
        raise TemplateError("the sample is no JSON: sample.output_json is not there", "sample_parse_error")
    value = item if namespace == "item" else sample.namespace()
    for position, step in enumerate(steps):
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
        else:
            where = namespace + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps[:position + 1])
            raise TemplateError(f"{where} is not in the {namespace}", "invalid_variable_error")
    return value


def render(text: str, sample: Sample, item: Any) -> str:
    """The text with each template replaced by its value (a string as it is, anything else as JSON)."""
    def value(placeholder: re.Match) -> str:
        found = lookup(placeholder.group(1), sample, item)
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

    return PLACEHOLDER.sub(value, text)
