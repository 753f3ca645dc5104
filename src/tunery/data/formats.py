"""The training file formats and the checks on one example. Three formats, one per file:

- chat: {"messages": [...], "functions"?, "tools"?, "parallel_tool_calls"?}
- prompt_completion (legacy): {"prompt": str, "completion": str}
- preference (DPO): {"input": {"messages": [...], "tools"?, ...}, "preferred_output": [...],
  "non_preferred_output": [...]}

Every problem has a stable code, the 1-based line and a message. Lines are read with a byte
limit, so a file of any size (or one enormous line) is read in bounded memory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MAX_LINE_BYTES = 4 * 1024 * 1024  # one example
READ_CHUNK_BYTES = 1024 * 1024
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
CHAT_KEYS = {"messages", "functions", "tools", "parallel_tool_calls"}
PROMPT_COMPLETION_KEYS = {"prompt", "completion"}
PREFERENCE_KEYS = {"input", "preferred_output", "non_preferred_output"}
PREFERENCE_INPUT_KEYS = {"messages", "tools", "parallel_tool_calls"}
MESSAGE_KEYS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "weight", "function_call", "tool_calls", "refusal"},
    "tool": {"role", "content", "tool_call_id", "name"},
    "function": {"role", "content", "name"},
}

# Stable problem codes (errors unless marked).
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
INVALID_UTF8 = "invalid_utf8"
LINE_TOO_LONG = "line_too_long"
MISSING_MESSAGES = "missing_messages"
UNKNOWN_KEY = "unknown_key"
UNKNOWN_ROLE = "unknown_role"
INVALID_MESSAGE = "invalid_message"
MISSING_CONTENT = "missing_content"
INVALID_CONTENT = "invalid_content"
INVALID_WEIGHT = "invalid_weight"
NOTHING_TO_TRAIN = "nothing_to_train"
INVALID_TOOL_CALL = "invalid_tool_call"
MISSING_TOOL_RESPONSE = "missing_tool_response"
UNKNOWN_FUNCTION = "unknown_function"
INVALID_FUNCTIONS = "invalid_functions"
INVALID_PREFERENCE = "invalid_preference"
MIXED_FORMATS = "mixed_formats"
TOO_FEW_EXAMPLES = "too_few_examples"
BLANK_LINE = "blank_line"  # warning
DUPLICATE_EXAMPLE = "duplicate_example"  # warning
TOO_LONG = "too_long"  # warning: longer than the model's context, will be truncated


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based; 0 for the file as a whole
    code: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.message} [{self.code}]"

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message}


Line = tuple[int, "dict[str, Any] | Problem | None"]  # None: a blank line


def read_lines(path: Path) -> Iterator[Line]:
    """Each line as (number, parsed object | the Problem that stops it | None when blank)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(_bounded_lines(handle), start=1):
            if raw is None:
                yield number, Problem(number, LINE_TOO_LONG, f"line is longer than {MAX_LINE_BYTES} bytes")
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a byte-order mark is accepted
            if not raw.strip():
                yield number, None
                continue
            yield number, _parse(number, raw)


def _bounded_lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """Lines of at most MAX_LINE_BYTES; None for a longer one, which is skipped unread."""
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := handle.readline(READ_CHUNK_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield raw


def _parse(number: int, raw: bytes) -> dict[str, Any] | Problem:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Problem(number, INVALID_UTF8, f"bytes that are not UTF-8 at position {exc.start}")
    except json.JSONDecodeError as exc:
        return Problem(number, INVALID_JSON, f"invalid JSON: {exc.msg} (column {exc.colno})")
    if not isinstance(obj, dict):
        return Problem(number, NOT_AN_OBJECT, f"each line must be a JSON object, not {type(obj).__name__}")
    return obj


FORMAT_NAMES = {"chat": "chat", "prompt_completion": "prompt/completion", "preference": "preference (DPO)"}  # as said to people


def example_format(obj: dict[str, Any]) -> str | None:
    if "messages" in obj:
        return "chat"
    if "input" in obj or "preferred_output" in obj or "non_preferred_output" in obj:
        return "preference"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    return None


def check_example(number: int, obj: dict[str, Any]) -> list[Problem]:
    """Every problem of one example; an empty list when it can be trained on."""
    kind = example_format(obj)
    if kind == "chat":
        return _check_chat(number, obj)
    if kind == "preference":
        return _check_preference(number, obj)
    if kind == "prompt_completion":
        return _check_prompt_completion(number, obj)
    return [Problem(number, MISSING_MESSAGES, "example has no 'messages' (nor 'prompt'/'completion')")]


# chat -------------------------------------------------------------------------------------------
def _check_chat(number: int, obj: dict[str, Any]) -> list[Problem]:
    problems = _unknown_keys(number, obj, CHAT_KEYS, "example")
    functions, function_problems = _declared_functions(number, obj)
    problems += function_problems
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        return problems + [Problem(number, MISSING_MESSAGES, "'messages' must be a non-empty list")]
    problems += _check_messages(number, messages, functions)
    if not problems and not any(m.get("role") == "assistant" and m.get("weight", 1) == 1 for m in messages):
        problems.append(Problem(number, NOTHING_TO_TRAIN, "no assistant message to train on (none, or all with weight 0)"))
    return problems


def _check_messages(number: int, messages: list[Any], functions: set[str] | None, where: str = "messages") -> list[Problem]:
    problems: list[Problem] = []
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        if not isinstance(message, dict):
            problems.append(Problem(number, INVALID_MESSAGE, f"{at} must be an object"))
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append(Problem(number, UNKNOWN_ROLE, f"{at} has unknown role {role!r}; expected one of {sorted(ROLES)}"))
            continue
        problems += _unknown_keys(number, message, MESSAGE_KEYS[role], at)
        problems += _check_content(number, message, at)
        if "weight" in message and (isinstance(message["weight"], bool) or message["weight"] not in (0, 1)):
            problems.append(Problem(number, INVALID_WEIGHT, f"{at} weight must be 0 or 1, not {message['weight']!r}"))
        if role == "function" and not isinstance(message.get("name"), str):
            problems.append(Problem(number, INVALID_MESSAGE, f"{at} (a function result) needs the function's 'name'"))
        if "function_call" in message:
            problems += _check_function_call(number, message["function_call"], functions, at)
        if "tool_calls" in message:
            problems += _check_tool_calls(number, message["tool_calls"], messages[index + 1:], functions, at)
    return problems


def _check_content(number: int, message: dict[str, Any], at: str) -> list[Problem]:
    content = message.get("content")
    if content is None:
        if message.get("role") == "assistant" and (message.get("function_call") or message.get("tool_calls")):
            return []
        return [Problem(number, MISSING_CONTENT, f"{at} has no content")]
    if isinstance(content, str):
        return []
    if isinstance(content, list):
        for part_index, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                return [Problem(number, INVALID_CONTENT,
                                f"{at}.content[{part_index}] must be a text part {{\"type\": \"text\", \"text\": ...}}")]
        return []
    return [Problem(number, INVALID_CONTENT, f"{at} content must be a string or a list of text parts, not {type(content).__name__}")]


def _declared_functions(number: int, obj: dict[str, Any]) -> tuple[set[str] | None, list[Problem]]:
    """Names declared by `functions` and `tools`; None when the example declares neither."""
    names: set[str] = set()
    declared = False
    problems: list[Problem] = []
    for key in ("functions", "tools"):
        if key not in obj:
            continue
        declared = True
        items = obj[key]
        if not isinstance(items, list):
            problems.append(Problem(number, INVALID_FUNCTIONS, f"'{key}' must be a list"))
            continue
        for index, item in enumerate(items):
            spec = item.get("function") if key == "tools" and isinstance(item, dict) else item
            if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)):
                problems.append(Problem(number, INVALID_FUNCTIONS, f"{key}[{index}] must have a 'name'"))
                continue
            names.add(spec["name"])
    return (names if declared else None), problems


def _check_function_call(number: int, call: Any, functions: set[str] | None, at: str) -> list[Problem]:
    if not (isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(call.get("arguments", ""), str)):
        return [Problem(number, INVALID_TOOL_CALL, f"{at}.function_call must be {{\"name\": str, \"arguments\": str}}")]
    if functions is None or call["name"] not in functions:
        return [Problem(number, UNKNOWN_FUNCTION, f"{at}.function_call names {call['name']!r}, which 'functions' does not declare")]
    return []


def _check_tool_calls(number: int, calls: Any, later: list[Any], functions: set[str] | None, at: str) -> list[Problem]:
    if not isinstance(calls, list) or not calls:
        return [Problem(number, INVALID_TOOL_CALL, f"{at}.tool_calls must be a non-empty list")]
    answered = {m.get("tool_call_id") for m in later if isinstance(m, dict) and m.get("role") == "tool"}
    problems = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not (isinstance(call, dict) and isinstance(call.get("id"), str) and call.get("type", "function") == "function"
                and isinstance(function, dict) and isinstance(function.get("name"), str)
                and isinstance(function.get("arguments", ""), str)):
            problems.append(Problem(number, INVALID_TOOL_CALL, f"{at}.tool_calls[{index}] must be "
                                    "{\"id\": str, \"type\": \"function\", \"function\": {\"name\": str, \"arguments\": str}}"))
            continue
        if functions is not None and function["name"] not in functions:
            problems.append(Problem(number, UNKNOWN_FUNCTION, f"{at}.tool_calls[{index}] names {function['name']!r}, which 'tools' does not declare"))
        if later and call["id"] not in answered:
            problems.append(Problem(number, MISSING_TOOL_RESPONSE,
                                    f"{at}.tool_calls[{index}] (id {call['id']!r}) has no tool message answering it"))
    return problems


# prompt / completion ----------------------------------------------------------------------------
def _check_prompt_completion(number: int, obj: dict[str, Any]) -> list[Problem]:
    problems = _unknown_keys(number, obj, PROMPT_COMPLETION_KEYS, "example")
    for key in ("prompt", "completion"):
        if key not in obj:
            problems.append(Problem(number, MISSING_CONTENT, f"'{key}' is missing"))
        elif not isinstance(obj[key], str):
            problems.append(Problem(number, INVALID_CONTENT, f"'{key}' must be a string, not {type(obj[key]).__name__}"))
    if not problems and not obj["completion"]:
        problems.append(Problem(number, NOTHING_TO_TRAIN, "'completion' is empty"))
    return problems


# preference (DPO) -------------------------------------------------------------------------------
def _check_preference(number: int, obj: dict[str, Any]) -> list[Problem]:
    problems = _unknown_keys(number, obj, PREFERENCE_KEYS, "example")
    given = obj.get("input")
    if not isinstance(given, dict) or not isinstance(given.get("messages"), list) or not given["messages"]:
        return problems + [Problem(number, MISSING_MESSAGES, "'input' must be an object with non-empty 'messages'")]
    problems += _unknown_keys(number, given, PREFERENCE_INPUT_KEYS, "input")
    functions, function_problems = _declared_functions(number, given)
    problems += function_problems + _check_messages(number, given["messages"], functions, "input.messages")
    for key in ("preferred_output", "non_preferred_output"):
        output = obj.get(key)
        if not isinstance(output, list) or not output:
            problems.append(Problem(number, INVALID_PREFERENCE, f"'{key}' must be a non-empty list of assistant messages"))
            continue
        if any(not isinstance(m, dict) or m.get("role") != "assistant" for m in output):
            problems.append(Problem(number, INVALID_PREFERENCE, f"'{key}' may hold assistant messages only"))
            continue
        if len(output) != 1:  # as OpenAI's DPO: one answer to the input, not a conversation
            problems.append(Problem(number, INVALID_PREFERENCE, f"'{key}' must hold exactly one assistant message, "
                                                                f"not {len(output)}"))
            continue
        (message,) = output
        if message.get("weight", 1) != 1:
            problems.append(Problem(number, INVALID_PREFERENCE, f"'{key}' is what the pair trains on: its message "
                                                                "takes no weight 0"))
            continue
        problems += _check_messages(number, output, functions, key)
        if not _says_something(message):
            problems.append(Problem(number, NOTHING_TO_TRAIN, f"'{key}' is empty: its message has no content "
                                                              "and no tool calls"))
    if not problems and obj["preferred_output"] == obj["non_preferred_output"]:
        problems.append(Problem(number, INVALID_PREFERENCE, "the preferred and non-preferred outputs are the same"))
    return problems


def _says_something(message: dict[str, Any]) -> bool:
    content = message.get("content")
    text = "".join(p.get("text", "") for p in content if isinstance(p, dict)) if isinstance(content, list) else content
    return bool((isinstance(text, str) and text.strip()) or message.get("tool_calls") or message.get("function_call"))


def _unknown_keys(number: int, obj: dict[str, Any], allowed: set[str], where: str) -> list[Problem]:
    extra = sorted(set(obj) - allowed)
    return [Problem(number, UNKNOWN_KEY, f"{where} has unknown key(s) {extra}; allowed: {sorted(allowed)}")] if extra else []
