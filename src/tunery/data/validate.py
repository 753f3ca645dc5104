"""Validating a whole training file, streamed: format errors with their lines, warnings (blank
lines, duplicates), and the file-level rules (one format per file, a minimum of examples)."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunery.data.formats import (
    BLANK_LINE,
    DUPLICATE_EXAMPLE,
    MIXED_FORMATS,
    TOO_FEW_EXAMPLES,
    Problem,
    check_example,
    example_format,
    read_lines,
)

MIN_EXAMPLES = 10  # as OpenAI: fewer is refused
MAX_KEPT_PROBLEMS = 1000  # problems past this many are counted, not kept


@dataclass
class Report:
    format: str | None = None  # "chat" | "prompt_completion" | "preference"
    examples: int = 0  # examples without errors
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    error_count: int = 0
    warning_count: int = 0

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def error(self, problem: Problem) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_KEPT_PROBLEMS:
            self.errors.append(problem)

    def warn(self, problem: Problem) -> None:
        self.warning_count += 1
        if len(self.warnings) < MAX_KEPT_PROBLEMS:
            self.warnings.append(problem)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "format": self.format, "examples": self.examples,
                "error_count": self.error_count, "warning_count": self.warning_count,
                "errors": [p.as_dict() for p in self.errors], "warnings": [p.as_dict() for p in self.warnings]}


def validate_file(path: Path) -> Report:
    """The format checks alone (no tokenizer): what an upload needs."""
    report = Report()
    for _ in iter_valid_examples(path, report):
        pass
    return finish_report(report)


def finish_report(report: Report) -> Report:
    """The file-level rules, once every line has been read."""
    if report.examples < MIN_EXAMPLES and report.ok:
        report.error(Problem(0, TOO_FEW_EXAMPLES,
                             f"the file has {report.examples} valid examples; at least {MIN_EXAMPLES} are required"))
    return report


def iter_valid_examples(path: Path, report: Report) -> Iterator[tuple[int, dict[str, Any]]]:
    """The examples without errors, as (line, example), filling the report as it reads.
    Duplicates are found at the end from an 8-byte digest and a line number per example
    (16 bytes each: a million examples take 16 MB), and warned about then."""
    digests, lines = array("Q"), array("Q")
    for number, item in read_lines(path):
        if item is None:
            report.warn(Problem(number, BLANK_LINE, "blank line skipped"))
            continue
        if isinstance(item, Problem):
            report.error(item)
            continue
        kind = example_format(item)
        if report.format is None:
            report.format = kind
        elif kind is not None and kind != report.format:
            report.error(Problem(number, MIXED_FORMATS, f"a {kind} example in a file of {report.format} examples"))
            continue
        problems = check_example(number, item)
        for problem in problems:
            report.error(problem)
        if problems:
            continue
        digest = hashlib.blake2b(json.dumps(item, sort_keys=True).encode(), digest_size=8).digest()
        digests.append(int.from_bytes(digest, "little"))
        lines.append(number)
        report.examples += 1
        yield number, item
    _warn_duplicates(digests, lines, report)


def _warn_duplicates(digests: array, lines: array, report: Report) -> None:
    keys = np.frombuffer(digests, dtype=np.uint64)
    order = np.argsort(keys, kind="stable")  # equal digests stay in line order
    ordered = keys[order]
    repeats = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
    first_line: dict[int, int] = {}
    for position in repeats:
        digest = int(ordered[position])
        first = first_line.setdefault(digest, lines[order[position - 1]])
        report.warn(Problem(lines[order[position]], DUPLICATE_EXAMPLE, f"duplicate of the example on line {first}"))
    report.warnings.sort(key=lambda p: p.line)


def load_examples(path: Path) -> list[dict[str, Any]]:
    """The examples of a file that validate_file() accepted."""
    return [example for _, example in iter_valid_examples(path, Report())]
