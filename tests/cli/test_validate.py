"""`tunery validate`: the report for people and as JSON, exit codes, the time estimate."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from tests.helpers import SAMPLE_DATA, TINY_MODEL
from tunery.cli import app
from tunery.config import Settings

runner = CliRunner()


@pytest.fixture
def tiny_in_data_dir(tiny_model_dir):
    shutil.copytree(tiny_model_dir, Settings().data_dir / "base_models" / TINY_MODEL)


def test_a_valid_file_reports_statistics_and_an_estimate(tiny_in_data_dir):
    result = runner.invoke(app, ["validate", str(SAMPLE_DATA / "marv.jsonl"), "--model", TINY_MODEL, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["format"] == "chat" and report["examples"] == 12 and report["errors"] == []
    stats = report["stats"]
    assert stats["n_epochs"] == 9 and stats["billed_tokens"] == stats["tokens"] * 9
    assert stats["tokens_per_example"]["min"] <= stats["tokens_per_example"]["p95"] <= stats["tokens_per_example"]["max"]
    assert stats["estimated_seconds"] > 0

    people = runner.invoke(app, ["validate", str(SAMPLE_DATA / "marv.jsonl"), "--model", TINY_MODEL, "--no-estimate"])
    assert people.exit_code == 0
    for said in ("12 valid examples", "trained tokens", "Default epochs (auto): 9", "The file is valid."):
        assert said in people.output


def test_a_file_with_errors_exits_1_with_each_problem(tiny_in_data_dir, tmp_path):
    lines = (SAMPLE_DATA / "marv.jsonl").read_text().splitlines()
    lines[3] = '{"messages": [{"role": "user", "content": "hi"}]}'
    lines[7] = "{oops"
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    result = runner.invoke(app, ["validate", str(path), "--model", TINY_MODEL, "--json"])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["errors"]
    assert [(p["line"], p["code"]) for p in problems] == [(4, "nothing_to_train"), (8, "invalid_json")]
    assert all(p["message"] for p in problems)
    people = runner.invoke(app, ["validate", str(path), "--model", TINY_MODEL])
    assert people.exit_code == 1 and "nothing_to_train" in people.output and "2 errors" in people.output


@pytest.mark.parametrize("args, message", [(["/no/such.jsonl"], "no such file"),
                                           ([str(SAMPLE_DATA / "marv.jsonl"), "--model", "gpt-5"], "unknown base model")])
def test_bad_arguments_are_one_line_errors(args, message):
    result = runner.invoke(app, ["validate", *args])
    assert result.exit_code == 1 and result.output.startswith("Error:") and message in result.output
