"""Reading training files: each problem with its line and code; good files pass."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED_DATA
from tunery.data.validate import MIN_EXAMPLES, validate_file

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write(tmp_path, lines: list) -> object:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines))
    return path


@pytest.mark.parametrize("name", ["marv.jsonl", "orders_train.jsonl", "tickets_train.jsonl"])
def test_sample_data_sets_are_valid(name):
    report = validate_file(SHARED_DATA / name)
    assert report.ok, report.errors
    assert report.format == ("prompt_completion" if name.startswith("tickets") else "chat")


@pytest.mark.parametrize("bad, code", [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    ({"messages": []}, "missing_messages"),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "unknown_role"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}, "invalid_content"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]}, "invalid_weight"),
    ({"messages": [{"role": "user", "content": "x"}]}, "nothing_to_train"),
    ({"prompt": "p", "completion": "c"}, "mixed_formats"),
    (b"\xff\xfe{}", "invalid_utf8"),
])
def test_a_planted_bad_line_is_reported_with_its_line_and_code(tmp_path, bad, code):
    report = validate_file(write(tmp_path, [GOOD] * 4 + [bad] + [GOOD] * MIN_EXAMPLES))
    assert [(p.line, p.code) for p in report.errors] == [(5, code)]


def test_too_few_examples(tmp_path):
    report = validate_file(write(tmp_path, [GOOD] * (MIN_EXAMPLES - 1)))
    assert [p.code for p in report.errors] == ["too_few_examples"]


def test_byte_order_mark_and_blank_lines_are_accepted(tmp_path):
    path = write(tmp_path, [GOOD] * MIN_EXAMPLES + [b""])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\n\n", 1))
    report = validate_file(path)
    assert report.ok and report.examples == MIN_EXAMPLES
