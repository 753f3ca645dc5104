"""What an eval run's items are, free of HTTP and SQL, for the API (checks before a run is stored)
and the run's executor alike: the rows of a data source ({"item": ..., "sample": ...}, inline or
a JSONL file), each item checked against the eval's item_schema (jsonschema: the first problem,
naming the field), the messages a model is asked for an item (input_messages' templates over the
item, or the item's own messages named by item_reference), the sample a jsonl row holds, and
whether a criterion's score passes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import regex
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

from tunery.graders import GraderResult, Sample
from tunery.graders.templates import PLACEHOLDER, TemplateError, lookup, render
from tunery.protocol.evals import (ItemReference, LabelModelCriterion, PythonCriterion, ScoreModelCriterion,
                                   StringCheckCriterion, TemplateMessages, TextSimilarityCriterion)
from tunery.protocol.graders import InputText, OutputText, JudgeMessage

PATTERN_SECONDS = 0.05  # how long one match of an item_schema's pattern may take (a backtracking pattern's stops)
NO_REMOTE = Registry()  # an item_schema's $ref resolves within the schema only: nothing is fetched
DEFAULT_PYTHON_PASS = 0.5  # a python criterion without pass_threshold
SAMPLE_SCHEMA = {  # the sample namespace a run fills in (include_sample_schema), as OpenAI describes it
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object", "properties": {
            "message": {"type": "object", "properties": {"role": {"type": "string"}, "content": {"type": "string"}}},
            "finish_reason": {"type": "string"}}}},
        "output_text": {"type": "string"},
        "output_json": {"type": "object"},
        "output_tools": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["model", "choices"],
}


class RowError(ValueError):
    """A data source's row that is no {"item": {...}} object; `index` is its position (0-based)."""

    def __init__(self, index: int, message: str):
        super().__init__(f"line {index + 1}: {message}")
        self.index = index


def data_source_schema(item_schema: dict[str, Any], include_sample_schema: bool) -> dict[str, Any]:
    """The schema of what testing criteria read, as an eval's data_source_config shows it."""
    properties = {"item": item_schema} | ({"sample": SAMPLE_SCHEMA} if include_sample_schema else {})
    return {"type": "object", "properties": properties, "required": list(properties)}


def schema_error(item_schema: dict[str, Any]) -> str | None:
    """Why the item_schema is no JSON schema (or one whose $ref leaves it or names nothing in it);
    None when it is one."""
    try:
        jsonschema.validators.validator_for(item_schema).check_schema(item_schema)
    except jsonschema.SchemaError as exc:
        return exc.message
    dialect = item_schema.get("$schema")
    resource = specification_with(dialect if isinstance(dialect, str) else "", default=DRAFT202012).create_resource(
        item_schema)
    resolver = NO_REMOTE.resolver_with_root(resource)
    for ref in _refs(item_schema):
        if not ref.startswith("#"):
            return f"$ref {ref!r} is not within the schema (a $ref names a part of it, as '#/$defs/<name>')"
        try:
            resolver.lookup(ref)
        except Unresolvable:
            return f"$ref {ref!r} names nothing in the schema"
    return None


def _refs(schema: Any) -> Iterator[str]:
    """Every $ref (and $dynamicRef) anywhere in the schema."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _refs(value)


class PatternTooSlow(Exception):
    """Matching one of the schema's patterns took longer than PATTERN_SECONDS."""


def _search(pattern: str, text: str) -> bool:
    try:
        return regex.search(pattern, text, timeout=PATTERN_SECONDS) is not None
    except TimeoutError:
        raise PatternTooSlow(f"matching the item_schema's pattern {pattern!r} took more than {PATTERN_SECONDS} s") from None
    except regex.error as exc:
        raise PatternTooSlow(f"the item_schema's pattern {pattern!r} is no regular expression ({exc})") from None


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, patterns, instance, schema):
    if validator.is_type(instance, "object"):
        for pattern, subschema in patterns.items():
            for key, value in instance.items():
                if _search(pattern, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator, additional, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    properties, patterns = schema.get("properties", {}), list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in properties and not any(_search(p, k) for p in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"Additional properties are not allowed ({', '.join(map(repr, sorted(extras)))} "
                              f"{'was' if len(extras) == 1 else 'were'} unexpected)")


class ItemChecker:
    """Items checked against an eval's item_schema: its patterns matched with a time limit (the
    `regex` module), its $refs resolved within the schema only."""

    def __init__(self, item_schema: dict[str, Any]):
        cls = jsonschema.validators.validator_for(item_schema)
        bounded = jsonschema.validators.extend(cls, {"pattern": _pattern, "patternProperties": _pattern_properties,
                                                     "additionalProperties": _additional_properties})
        self.validator = bounded(item_schema, registry=NO_REMOTE)

    def problem(self, item: Any) -> tuple[str, str] | None:
        """(the field's path under the item, e.g. ".answer" or "" for the item itself, what is wrong), or None."""
        try:
            error = best_match(self.validator.iter_errors(item))
        except PatternTooSlow as exc:
            return "", str(exc)
        except Unresolvable as exc:
            return "", f"the item_schema's $ref cannot be resolved ({exc})"
        if error is None:
            return None
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path), error.message

    def describe(self, index: int, item: Any) -> str | None:
        """The problem of item `index` in words naming the item and the field; None when it matches."""
        found = self.problem(item)
        if found is None:
            return None
        path, message = found
        return f"Item {index} does not match the eval's item_schema at item{path}: {message}"


def content_rows(content: list[Any]) -> list[dict[str, Any]]:
    """Inline rows (protocol.evals.ContentRow) as plain dicts."""
    return [row.model_dump(exclude_none=True) for row in content]


def file_rows(path: Path) -> Iterator[dict[str, Any]]:
    """A JSONL file's rows, each {"item": {...}} with an optional "sample" (blank lines skipped);
    RowError naming the line otherwise."""
    with path.open("rb") as handle:
        for index, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise RowError(index, f"not JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("item"), dict):
                raise RowError(index, 'each line is an object {"item": {...}} (with an optional "sample")')
            if not isinstance(row.get("sample", {}), dict):
                raise RowError(index, '"sample" is an object')
            yield row


# what the model is asked -----------------------------------------------------------------------
def input_templates(input_messages: TemplateMessages | ItemReference | None) -> Iterator[tuple[str, str]]:
    """(param, text) of every text of the input messages that may hold templates."""
    if isinstance(input_messages, TemplateMessages):
        for index, message in enumerate(input_messages.template):
            for text in _texts(message):
                yield f"data_source.input_messages.template.{index}.content", text


def item_templates(text: str) -> Iterator[str]:
    """The templates of a text that read anything but the item (input messages see only the item)."""
    for placeholder in PLACEHOLDER.finditer(text):
        if not placeholder.group(1).strip().startswith("item"):
            yield placeholder.group()


def _texts(message: JudgeMessage) -> list[str]:
    parts = message.content if isinstance(message.content, list) else [message.content]
    return [p if isinstance(p, str) else p.text for p in parts if isinstance(p, (str, InputText, OutputText))]


def messages_for(input_messages: TemplateMessages | ItemReference | None, item: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages a model answers for this item; TemplateError when the item lacks what
    they read. Without input_messages, the item's `messages` or else its `input` (text) is asked."""
    empty = Sample("")
    if isinstance(input_messages, TemplateMessages):
        return [{"role": m.role, "content": "".join(render(text, empty, item) for text in _texts(m))}
                for m in input_messages.template]
    if isinstance(input_messages, ItemReference):
        reference = input_messages.item_reference.strip().removeprefix("{{").removesuffix("}}").strip()
        messages = lookup(reference, empty, item)
    elif "messages" in item:
        messages = item["messages"]
    elif isinstance(item.get("input"), str):
        return [{"role": "user", "content": item["input"]}]
    else:
        raise TemplateError("without input_messages, an item holds its chat `messages` (or an `input` text)",
                            "invalid_variable_error")
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if not (isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)):
        raise TemplateError("the messages an item names are a list of {role, content} objects",
                            "invalid_variable_error")
    return messages


def given_sample(sample: dict[str, Any] | None) -> Sample | None:
    """The sample a jsonl row holds: its output_text (or its first choice's message, or its
    first output message), with output_json and output_tools as given; None without one."""
    if sample is None:
        return None
    text, tools = sample.get("output_text"), sample.get("output_tools")
    if text is None and sample.get("choices"):
        message = (sample["choices"][0] or {}).get("message") or {}
        text, tools = message.get("content"), tools or message.get("tool_calls")
    if text is None and sample.get("output"):
        text = (sample["output"][0] or {}).get("content")
    found = Sample.from_text(text if isinstance(text, str) else json.dumps(text) if text is not None else "",
                             tools if isinstance(tools, list) else None)
    if "output_json" in sample:
        found.output_json = sample["output_json"]
    return found


# what passes -------------------------------------------------------------------------------------
def passed(criterion: Any, result: GraderResult) -> bool:
    """Whether a criterion's result passes: a check that holds, a passing label, or a score at
    least the pass_threshold (python: 0.5 without one; score_model: the middle of its range)."""
    if result.failed:
        return False
    if isinstance(criterion, (StringCheckCriterion, LabelModelCriterion)):
        return result.reward >= 1.0
    if isinstance(criterion, TextSimilarityCriterion):
        return result.reward >= criterion.pass_threshold
    if isinstance(criterion, PythonCriterion):
        return result.reward >= (DEFAULT_PYTHON_PASS if criterion.pass_threshold is None else criterion.pass_threshold)
    if isinstance(criterion, ScoreModelCriterion):
        if criterion.pass_threshold is not None:
            return result.reward >= criterion.pass_threshold
        low, high = criterion.range or (0.0, 1.0)
        return result.reward >= (low + high) / 2
    raise TypeError(f"not a testing criterion: {type(criterion).__name__}")
