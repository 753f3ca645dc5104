"""Reading and validating training files: every problem code from a planted bad line, with its
line number; warnings; the three formats; bounded memory on a large file."""

from __future__ import annotations

import json
import tracemalloc

import pytest

from tests.helpers import FUNCTION_EXAMPLE, SAMPLE_DATA, TOOL_EXAMPLE, WEATHER
from tests.helpers import WEATHER_CALL as CALL
from tests.helpers import WEATHER_QUESTION as USER
from tunery.data.formats import MAX_LINE_BYTES
from tunery.data.validate import MIN_EXAMPLES, validate_file

GOOD = {"messages": [USER, {"role": "assistant", "content": "Cold."}]}
PREFERENCE = {"input": {"messages": [USER]}, "preferred_output": [{"role": "assistant", "content": "Cold, -3."}],
              "non_preferred_output": [{"role": "assistant", "content": "No idea."}]}


def write(tmp_path, lines: list) -> object:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines))
    return path


def chat(*messages, **extra) -> dict:
    return {"messages": list(messages), **extra}


@pytest.mark.parametrize("name, kind", [("marv.jsonl", "chat"), ("orders_train.jsonl", "chat"),
                                        ("tickets_train.jsonl", "prompt_completion")])
def test_sample_data_sets_are_valid(name, kind):
    report = validate_file(SAMPLE_DATA / name)
    assert report.ok, report.errors
    assert report.format == kind and not report.warnings


@pytest.mark.parametrize("example", [TOOL_EXAMPLE, FUNCTION_EXAMPLE, chat(USER, {"role": "assistant", "tool_calls": [CALL]}),
                                     chat({"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, USER,
                                          {"role": "assistant", "content": "No.", "name": "bot"})])
def test_chat_features_are_accepted(tmp_path, example):
    report = validate_file(write(tmp_path, [example] * MIN_EXAMPLES))
    assert report.ok, report.errors


def test_preference_data_is_parsed_and_validated(tmp_path):
    report = validate_file(write(tmp_path, [PREFERENCE] * MIN_EXAMPLES))
    assert report.ok and report.format == "preference"


ASSISTANT = {"role": "assistant", "content": "y"}


@pytest.mark.parametrize("bad, code", [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b'{"messages": "\xff\xfe"}', "invalid_utf8"),
    ({"text": "hello"}, "missing_messages"),
    (chat(), "missing_messages"),
    (chat(USER, ASSISTANT, extra=1), "unknown_key"),
    (chat({"role": "user", "content": "x", "mood": "happy"}, ASSISTANT), "unknown_key"),
    (chat({"role": "user", "content": "x", "weight": 1}, ASSISTANT), "unknown_key"),
    (chat({"role": "robot", "content": "x"}, ASSISTANT), "unknown_role"),
    (chat("just text", ASSISTANT), "invalid_message"),
    (chat({"role": "user"}, ASSISTANT), "missing_content"),
    (chat(USER, {"role": "assistant"}), "missing_content"),
    (chat({"role": "user", "content": 5}, ASSISTANT), "invalid_content"),
    (chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, ASSISTANT), "invalid_content"),
    (chat(USER, {"role": "assistant", "content": "y", "weight": 2}), "invalid_weight"),
    (chat(USER, {"role": "assistant", "content": "y", "weight": True}), "invalid_weight"),
    (chat(USER), "nothing_to_train"),
    (chat(USER, {"role": "assistant", "content": "y", "weight": 0}), "nothing_to_train"),
    (chat(USER, {"role": "assistant", "tool_calls": [{"id": "c"}]}), "invalid_tool_call"),
    (chat(USER, {"role": "assistant", "tool_calls": [CALL]}, {"role": "user", "content": "?"}, ASSISTANT),
     "missing_tool_response"),
    (chat(USER, {"role": "assistant", "function_call": {"name": "get_time", "arguments": "{}"}}, functions=[WEATHER]),
     "unknown_function"),
    (chat(USER, {"role": "assistant", "function_call": {"name": "get_time", "arguments": "{}"}}), "unknown_function"),
    (chat(USER, {"role": "assistant", "tool_calls": [CALL]}, tools=[{"type": "function", "function": {"name": "other"}}]),
     "unknown_function"),
    (chat(USER, ASSISTANT, functions=[{"description": "no name"}]), "invalid_functions"),
    (chat(USER, {"role": "function", "content": "3"}, ASSISTANT), "invalid_message"),
    ({"prompt": "p", "completion": "c"}, "mixed_formats"),
    ({"input": {"messages": [USER]}, "preferred_output": [], "non_preferred_output": [ASSISTANT]}, "mixed_formats"),
])
def test_a_planted_bad_line_is_reported_with_its_line_and_code(tmp_path, bad, code):
    report = validate_file(write(tmp_path, [GOOD] * 4 + [bad] + [GOOD] * MIN_EXAMPLES))
    assert [(p.line, p.code) for p in report.errors] == [(5, code)], report.errors
    assert report.examples == MIN_EXAMPLES + 4


@pytest.mark.parametrize("bad, code", [
    ({"prompt": "p"}, "missing_content"),
    ({"prompt": "p", "completion": 3}, "invalid_content"),
    ({"prompt": "p", "completion": ""}, "nothing_to_train"),
    ({"prompt": "p", "completion": "c", "label": "x"}, "unknown_key"),
])
def test_prompt_completion_problems(tmp_path, bad, code):
    good = {"prompt": "Ticket: late\n\n###\n\n", "completion": " shipping"}
    report = validate_file(write(tmp_path, [good] * MIN_EXAMPLES + [bad]))
    assert [(p.line, p.code) for p in report.errors] == [(MIN_EXAMPLES + 1, code)]


@pytest.mark.parametrize("bad, code", [
    ({"input": {"messages": []}, "preferred_output": [ASSISTANT], "non_preferred_output": [ASSISTANT]}, "missing_messages"),
    ({**PREFERENCE, "non_preferred_output": [USER]}, "invalid_preference"),
    ({**PREFERENCE, "non_preferred_output": PREFERENCE["preferred_output"]}, "invalid_preference"),
    ({**PREFERENCE, "preferred_output": []}, "invalid_preference"),
    ({**PREFERENCE, "preferred_output": [ASSISTANT, ASSISTANT]}, "invalid_preference"),  # a conversation, not an answer
    ({**PREFERENCE, "non_preferred_output": [{"role": "assistant", "content": " "}]}, "nothing_to_train"),
    ({**PREFERENCE, "preferred_output": [{"role": "assistant", "content": "y", "weight": 0}]}, "invalid_preference"),
])
def test_preference_problems(tmp_path, bad, code):
    report = validate_file(write(tmp_path, [PREFERENCE] * MIN_EXAMPLES + [bad]))
    assert [(p.line, p.code) for p in report.errors] == [(MIN_EXAMPLES + 1, code)]


def test_a_line_over_the_size_limit_is_reported_and_reading_goes_on(tmp_path):
    huge = json.dumps(chat({"role": "user", "content": "x" * MAX_LINE_BYTES}, ASSISTANT)).encode()
    report = validate_file(write(tmp_path, [GOOD, huge] + [GOOD] * MIN_EXAMPLES))
    assert [(p.line, p.code) for p in report.errors] == [(2, "line_too_long")]
    assert report.examples == MIN_EXAMPLES + 1


def test_too_few_examples(tmp_path):
    report = validate_file(write(tmp_path, [GOOD] * (MIN_EXAMPLES - 1)))
    assert [(p.line, p.code) for p in report.errors] == [(0, "too_few_examples")]


def test_byte_order_mark_blank_lines_and_duplicates(tmp_path):
    other = chat({"role": "user", "content": "And in Rome?"}, ASSISTANT)
    path = write(tmp_path, [GOOD, b"", other] + [chat({"role": "user", "content": str(i)}, ASSISTANT) for i in range(8)]
                 + [GOOD, other, GOOD])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    report = validate_file(path)
    assert report.ok and report.examples == 13
    assert [(p.line, p.code) for p in report.warnings] == [
        (2, "blank_line"), (12, "duplicate_example"), (13, "duplicate_example"), (14, "duplicate_example")]
    assert "line 1" in report.warnings[1].message and "line 3" in report.warnings[2].message


def test_a_large_file_validates_in_bounded_memory(tmp_path):
    line = json.dumps(chat({"role": "user", "content": "word " * 100}, ASSISTANT)).encode()
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as out:
        for _ in range(30_000):
            out.write(line + b"\n")
    tracemalloc.start()
    report = validate_file(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.ok and report.examples == 30_000 and report.warning_count == 29_999
    assert path.stat().st_size > 15_000_000
    # Read a line at a time: what stays is each example's figures (~50 bytes), not its text.
    assert peak < 2_500_000, f"peak {peak / 1e6:.1f} MB for a {path.stat().st_size / 1e6:.0f} MB file"
