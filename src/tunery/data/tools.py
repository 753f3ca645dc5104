"""Function and tool calling in prompts: how definitions (`tools`, deprecated `functions`) and
calls (`tool_calls`, deprecated `function_call`) become text the model reads and writes, and how
a model's answer is parsed back into calls.

A chat template that renders tools itself (it mentions `tool_calls`) receives them natively.
For the others, SmolLM2's included, tunery writes them in one text convention (the Hermes
<tool_call> style, which many open models were trained on), identically in training and at
inference, so a fine-tuned model answers in the form it learned."""

from __future__ import annotations

import json
import re
from typing import Any

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOLS_PREAMBLE = (
    "You can call functions. To call one, answer with\n"
    f"{TOOL_CALL_OPEN}\n{{\"name\": <function name>, \"arguments\": <arguments object>}}\n{TOOL_CALL_CLOSE}\n"
    "The functions:\n"
)
_CALL_PATTERN = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


def template_renders_tools(template: str | None) -> bool:
    return bool(template) and "tool_calls" in template


def function_specs(example: dict[str, Any]) -> list[dict[str, Any]]:
    """The functions an example declares, from `tools` and the deprecated `functions`."""
    specs = [t["function"] for t in example.get("tools") or [] if isinstance(t, dict) and "function" in t]
    return specs + list(example.get("functions") or [])


def text_messages(messages: list[dict[str, Any]], specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a template without tool support: definitions appended to the system message
    (one is added when there is none), calls written into the assistant's content."""
    out = [dict(m) for m in messages]
    for message in out:
        calls = _calls_of(message)
        if calls:
            text = "\n".join(f"{TOOL_CALL_OPEN}\n{json.dumps(c, ensure_ascii=False)}\n{TOOL_CALL_CLOSE}" for c in calls)
            message["content"] = f"{message['content']}\n{text}" if message.get("content") else text
        message.pop("tool_calls", None)
        message.pop("function_call", None)
    if specs:
        block = TOOLS_PREAMBLE + "\n".join(json.dumps(s, ensure_ascii=False) for s in specs)
        if out and out[0].get("role") in ("system", "developer"):
            out[0]["content"] = f"{out[0].get('content') or ''}\n\n{block}".lstrip()
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def native_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a template with tool support: Hugging Face's conventions (arguments as
    objects, `function_call` as a tool call, function results as tool messages)."""
    out = []
    for message in messages:
        message = dict(message)
        calls = _calls_of(message)
        if calls:
            message["tool_calls"] = [{"type": "function", "function": c} for c in calls]
            message.pop("function_call", None)
        if message.get("role") == "function":
            message["role"] = "tool"
        out.append(message)
    return out


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, str]]]:
    """The text without its tool calls, and the calls as {"name", "arguments" (a JSON string)}."""
    calls = []
    for match in _CALL_PATTERN.finditer(text):
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            arguments = call.get("arguments", {})
            calls.append({"name": call["name"],
                          "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)})
    return (_CALL_PATTERN.sub("", text).strip() if calls else text), calls


def _calls_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A message's calls as {"name", "arguments" (an object when it is valid JSON)}."""
    raw = [c.get("function", {}) for c in message.get("tool_calls") or []]
    if message.get("function_call"):
        raw.append(message["function_call"])
    return [{"name": c.get("name"), "arguments": _arguments(c.get("arguments", "{}"))} for c in raw]


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments
