"""`tunery evals` against a real server with the tiny model: a chat test file run on models (one
run each) prints a row per run with its counts, pass rate and mean score, or the runs' JSON; items
of a file asked with --prompt and graded by a grader JSON file; every wrong input is one line and
a non-zero exit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.helpers import COLOR_EXAMPLES, TEST_KEY, TINY_MODEL, jsonl
from tunery.cli import app

runner = CliRunner()


@pytest.fixture
def tunery(tiny_server):
    env = {"OPENAI_BASE_URL": tiny_server.base_url, "OPENAI_API_KEY": TEST_KEY, "COLUMNS": "250"}

    def run(*args: str, code: int = 0):
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result

    return run


def test_evals_run_prints_each_models_pass_rate_and_mean_score(tunery, tmp_path):
    tests = tmp_path / "colours.jsonl"
    tests.write_bytes(jsonl(COLOR_EXAMPLES[:4]))
    shown = tunery("evals", "run", str(tests), "-m", TINY_MODEL, "-m", TINY_MODEL, "--grader", "text_similarity",
                   "--metric", "fuzzy_match", "--pass-threshold", "0", "--max-tokens", "4").stdout
    rows = [line.split() for line in shown.splitlines() if line.split()[:1] == [TINY_MODEL]]
    assert len(rows) == 2, shown
    for row in rows:  # model, status, items, passed, failed, errored, pass rate, mean text_similarity
        assert row[1:7] == ["completed", "4", "4", "0", "0", "100.0%"], shown
        assert 0 <= float(row[7]) <= 1
    assert "mean text_similarity" in shown

    as_json = json.loads(tunery("evals", "run", str(tests), "-m", TINY_MODEL, "--grader", "string_check",
                                "--reference", "no fruit", "--max-tokens", "2", "--json").stdout)
    assert [r["result_counts"] for r in as_json] == [{"total": 4, "passed": 0, "failed": 4, "errored": 0}]
    eval_id = as_json[0]["eval_id"]
    assert eval_id in tunery("evals", "list").stdout
    assert "0.0%" in tunery("evals", "show", eval_id).stdout


def test_items_with_a_prompt_and_a_grader_file(tunery, tmp_path):
    tests = tmp_path / "items.jsonl"
    tests.write_bytes(jsonl([{"item": {"colour": c, "fruit": f}} for c, f in (("red", "apple"), ("yellow", "banana"))]))
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps({"type": "string_check", "name": "fruit", "input": "{{sample.output_text}}",
                                  "reference": "{{item.fruit}}", "operation": "ne"}))
    shown = tunery("evals", "run", str(tests), "-m", TINY_MODEL, "--grader", str(grader), "--prompt", "{{item.colour}}",
                   "--max-tokens", "1").stdout
    assert "mean fruit" in shown and "completed" in shown


@pytest.mark.parametrize("args, says", [
    (["missing.jsonl", "-m", TINY_MODEL], "no such file"),
    (["BAD", "-m", TINY_MODEL], "line 2: not JSON"),
    (["ITEMS", "-m", TINY_MODEL], "--prompt"),
    (["CHAT", "-m", TINY_MODEL, "--grader", "exact"], "--grader must be"),
    (["CHAT", "-m", TINY_MODEL, "--grader", "nothere.json"], "not a readable JSON file"),
    (["CHAT", "-m", TINY_MODEL, "--operation", "equals"], "400"),
    (["CHAT", "-m", "no-such-model"], "data_source.model"),
])
def test_wrong_input_is_one_line_and_a_non_zero_exit(tunery, tmp_path, args, says):
    files = {"BAD": '{"item": {}}\n{"item": \n', "ITEMS": '{"item": {"q": "x"}}\n', "CHAT": jsonl(COLOR_EXAMPLES[:1]).decode()}
    for key, text in files.items():
        (tmp_path / f"{key}.jsonl").write_text(text)
    args = [str(tmp_path / f"{a}.jsonl") if a in files else a for a in args]
    result = tunery("evals", "run", *args, code=1 if says in ("400", "data_source.model") else 2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and says in lines[0], result.output
