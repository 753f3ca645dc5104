"""`tunery prepare-data`: every fix on CSV, TSV, XLSX, JSON and JSONL input, the questions it
asks, the classification split, --to-chat, and one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from tunery.cli import app
from tunery.data.validate import validate_file

runner = CliRunner()
PRODUCTS = ["bike", "lamp", "kettle", "tent", "drone", "piano", "scarf", "mug", "chair", "boots", "radio"]


def messy() -> pd.DataFrame:
    """Upper-case column names, an extra column, an empty completion, a duplicate row, and no
    separator, leading space or stop sequence."""
    rows = [{"Prompt": f"Write a tagline for a {p}", "Completion": f"Simply the best {p}", "source": "web"}
            for p in PRODUCTS]
    rows.append(dict(rows[0]))  # duplicate
    rows.append({"Prompt": "Write a tagline for a sofa", "Completion": "", "source": "web"})  # empty completion
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, path) -> None:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".xlsx":
        frame.to_excel(path, index=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    else:
        frame.to_json(path, orient="records", lines=True)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".xlsx", ".json", ".jsonl"])
def test_every_fix_is_applied_with_yes(tmp_path, suffix):
    source = tmp_path / f"taglines{suffix}"
    write(messy(), source)
    result = runner.invoke(app, ["prepare-data", str(source), "--yes"])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "taglines_prepared.jsonl")
    assert len(rows) == len(PRODUCTS)  # the duplicate and the empty completion are gone
    assert all(set(r) == {"prompt", "completion"} for r in rows)
    assert all(r["prompt"].endswith("\n\n###\n\n") for r in rows)
    assert all(r["completion"].startswith(" Simply the best ") and r["completion"].endswith("\n") for r in rows)
    assert rows[0] == {"prompt": "Write a tagline for a bike\n\n###\n\n", "completion": " Simply the best bike\n"}
    for said in ("[Necessary] Lower-case column names", "[Necessary] Remove additional columns/keys: ['source']",
                 "[Necessary] Remove 1 rows with empty completions", "Remove 1 duplicate rows", "conditional generation",
                 "end every prompt with the separator `\\n\\n###\\n\\n`", 'stop=["\\n"]', "tunery validate"):
        assert said in result.output
    assert validate_file(tmp_path / "taglines_prepared.jsonl").ok


def test_declined_fixes_are_not_applied(tmp_path):
    source = tmp_path / "taglines.csv"
    write(messy(), source)
    # Asked in order: duplicates, separator, leading space, stop sequence.
    result = runner.invoke(app, ["prepare-data", str(source)], input="n\nn\ny\nn\n")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "taglines_prepared.jsonl")
    assert len(rows) == len(PRODUCTS) + 1  # the duplicate stayed; the empty completion went (necessary)
    assert not rows[0]["prompt"].endswith("###\n\n") and rows[0]["completion"] == " Simply the best bike"
    assert result.output.count("[Recommended]") == 4


def test_classification_data_is_split_into_training_and_validation(tmp_path):
    tickets = pd.DataFrame({"prompt": [f"Ticket {i}: {t}" for i, t in enumerate(["refund", "crash", "late"] * 10)],
                            "completion": ["billing", "technical", "shipping"] * 10})
    source = tmp_path / "tickets.csv"
    write(tickets, source)
    (tmp_path / "out").mkdir()
    result = runner.invoke(app, ["prepare-data", str(source), "-y", "-o", str(tmp_path / "out" / "t.jsonl")])
    assert result.exit_code == 0, result.output
    train, valid = read_jsonl(tmp_path / "out" / "t_train.jsonl"), read_jsonl(tmp_path / "out" / "t_valid.jsonl")
    assert (len(train), len(valid)) == (24, 6)
    assert {r["prompt"] for r in train}.isdisjoint(r["prompt"] for r in valid)
    assert all(r["completion"] in (" billing", " technical", " shipping") for r in train + valid)  # no stop for classes
    assert "classification" in result.output and "3 classes" in result.output and "max_tokens=1" in result.output


def test_to_chat_writes_the_chat_format(tmp_path):
    source = tmp_path / "taglines.jsonl"
    write(messy(), source)
    result = runner.invoke(app, ["prepare-data", str(source), "--yes", "--to-chat"])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "taglines_prepared.jsonl")
    assert rows[0] == {"messages": [{"role": "user", "content": "Write a tagline for a bike"},
                                    {"role": "assistant", "content": "Simply the best bike"}]}
    assert "separator" not in result.output
    assert validate_file(tmp_path / "taglines_prepared.jsonl").format == "chat"


@pytest.mark.parametrize("name, content, message", [
    ("data.csv", "prompt,answer\na,b\n", "`completion` column/key is missing"),
    ("data.txt", "hello", "unsupported file type"),
    ("data.json", "{broken", "cannot be read as JSON"),
    ("missing.csv", None, "no such file"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["prepare-data", str(path), "--yes"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.output
