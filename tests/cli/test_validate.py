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


QUESTIONS = [("What is the capital of France?", "Paris.", "I believe it could be Lyon, though I am not sure."),
             ("How many legs does a spider have?", "Eight.", "Six, like most insects do."),
             ("Who wrote Hamlet?", "Shakespeare.", "Charles Dickens, in the year 1900."),
             ("What is 2 + 2?", "4.", "Five, give or take a little."),
             ("Which planet is the largest?", "Jupiter.", "The Moon, which is bigger than all of them."),
             ("How many days are in a week?", "Seven.", "Ten days, counting the weekend twice."),
             ("What language is spoken in Brazil?", "Portuguese.", "Spanish, as everywhere in South America."),
             ("What is the chemical symbol for gold?", "Au.", "Gd, from the word gold."),
             ("Which ocean is the largest?", "The Pacific.", "The Indian Ocean, by far the largest of all."),
             ("What colour is a clear sky?", "Blue.", "Green, on most days of the year.")]


def pair(question: str, good: str, bad: str) -> dict:
    return {"input": {"messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}]},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}]}


def write_jsonl(path, examples) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return str(path)


def test_a_preference_file_is_reported_as_dpo_data_with_the_tokens_of_each_part(tiny_in_data_dir, tmp_path,
                                                                                smol_tokenizer):
    from tunery.data.render import render_chat, render_generation_prompt

    pairs = [pair(*q) for q in QUESTIONS]
    path = write_jsonl(tmp_path / "dpo.jsonl", pairs)
    result = runner.invoke(app, ["validate", path, "--model", TINY_MODEL, "--json", "--no-estimate"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["format"] == "preference" and report["examples"] == 10 and report["errors"] == []

    # Each pair is read as two sequences, the input followed by each output, and trains on both outputs.
    chosen = [render_chat(smol_tokenizer, p["input"]["messages"] + p["preferred_output"], max_length=10**9) for p in pairs]
    rejected = [render_chat(smol_tokenizer, p["input"]["messages"] + p["non_preferred_output"], max_length=10**9)
                for p in pairs]
    prompts = [len(render_generation_prompt(smol_tokenizer, p["input"]["messages"])) for p in pairs]
    both = [len(c.input_ids) + len(r.input_ids) for c, r in zip(chosen, rejected)]
    stats = report["stats"]
    assert (stats["input_tokens_per_example"]["min"], stats["input_tokens_per_example"]["max"]) == (min(prompts), max(prompts))
    for key, rendered in (("preferred_tokens_per_example", chosen), ("non_preferred_tokens_per_example", rejected)):
        trained = [r.trained_tokens for r in rendered]
        assert (stats[key]["min"], stats[key]["max"]) == (min(trained), max(trained)) and min(trained) > 0
    assert stats["non_preferred_tokens_per_example"]["mean"] > stats["preferred_tokens_per_example"]["mean"]
    assert (stats["tokens_per_example"]["min"], stats["tokens_per_example"]["max"]) == (min(both), max(both))
    assert stats["tokens"] == sum(both) and stats["billed_tokens"] == sum(both) * stats["n_epochs"]
    pair_trained = [c.trained_tokens + r.trained_tokens for c, r in zip(chosen, rejected)]
    assert (stats["trained_tokens_per_example"]["min"], stats["trained_tokens_per_example"]["max"]) == \
        (min(pair_trained), max(pair_trained))
    assert stats["messages_per_example"]["max"] == 2  # the input's

    people = runner.invoke(app, ["validate", path, "--model", TINY_MODEL, "--no-estimate"], env={"COLUMNS": "200"})
    assert people.exit_code == 0, people.output
    for said in ("preference (DPO) data, 10 valid pairs", "Per pair", "input tokens", "non-preferred output tokens",
                 "tokens (both sequences)", "trained tokens (both outputs)", "--method dpo",
                 "Pairs over the context (truncated): 0", "The file is valid."):
        assert said in people.output, said


def test_a_preference_file_gets_a_training_time_estimate(tiny_in_data_dir, tmp_path):
    path = write_jsonl(tmp_path / "dpo.jsonl", [pair(*q) for q in QUESTIONS])
    result = runner.invoke(app, ["validate", path, "--model", TINY_MODEL, "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)["stats"]
    assert stats["estimated_seconds"] > 0


def test_chat_reports_keep_their_shape(tiny_in_data_dir):
    result = runner.invoke(app, ["validate", str(SAMPLE_DATA / "marv.jsonl"), "--model", TINY_MODEL, "--json",
                                 "--no-estimate"])
    assert set(json.loads(result.stdout)["stats"]) == {
        "examples", "context_length", "messages_per_example", "tokens_per_example", "trained_tokens_per_example",
        "too_long", "tokens", "n_epochs", "billed_tokens", "estimated_seconds"}


def test_each_sequence_of_a_pair_is_held_against_the_context(tiny_in_data_dir, tmp_path):
    pairs = [pair(*q) for q in QUESTIONS]
    pairs[2]["non_preferred_output"][0]["content"] = "no " * 1500  # only the non-preferred sequence is too long
    pairs[5]["input"]["messages"][1]["content"] = "why " * 1500  # neither output fits in the context
    path = write_jsonl(tmp_path / "long.jsonl", pairs)
    result = runner.invoke(app, ["validate", path, "--model", TINY_MODEL, "--json", "--no-estimate"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [(w["line"], w["code"]) for w in report["warnings"]] == [(3, "too_long"), (6, "too_long")]
    assert [(e["line"], e["code"]) for e in report["errors"]] == [(6, "nothing_to_train")]
    assert report["stats"]["too_long"] == 2 and report["stats"]["examples"] == 9


ASSISTANT = {"role": "assistant", "content": "Fine."}


@pytest.mark.parametrize("line, code", [
    ({"messages": [{"role": "user", "content": "Hi"}, ASSISTANT]}, "mixed_formats"),
    ({"prompt": "Hi", "completion": " there"}, "mixed_formats"),
    (pair("Hi", "Hello.", "Go.") | {"non_preferred_output": []}, "invalid_preference"),
    (pair("Hi", "Hello.", "Go.") | {"preferred_output": [{"role": "user", "content": "Hello."}]}, "invalid_preference"),
    (pair("Hi", "Same.", "Same."), "invalid_preference"),
    ({"preferred_output": [ASSISTANT], "non_preferred_output": [ASSISTANT]}, "missing_messages"),
])
def test_problems_of_a_preference_file_are_reported_with_their_line(tiny_in_data_dir, tmp_path, line, code):
    examples = [pair(*q) for q in QUESTIONS]
    examples.insert(4, line)
    path = write_jsonl(tmp_path / "bad.jsonl", examples)
    result = runner.invoke(app, ["validate", path, "--model", TINY_MODEL, "--json", "--no-estimate"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["format"] == "preference" and report["examples"] == 10
    assert [(p["line"], p["code"]) for p in report["errors"]] == [(5, code)]
    people = runner.invoke(app, ["validate", path, "--model", TINY_MODEL, "--no-estimate"], env={"COLUMNS": "200"})
    assert people.exit_code == 1 and code in people.output and "The file has 1 errors." in people.output
