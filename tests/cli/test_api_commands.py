"""The API commands through the CLI runner against a real server with the tiny model: files,
jobs (a local file validated, uploaded and followed to its model; DPO jobs with --method dpo
--beta), models, chat and complete; --json for scripts, and every error one line with a
non-zero exit (2 for a wrong use of the options)."""

from __future__ import annotations

import csv
import io
import json
import re
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner
from tests.helpers import SAMPLE_DATA, TEST_KEY, TINY_MODEL
from tunery.cli import jobs as cli_jobs
from tunery.cli import app

MARV = SAMPLE_DATA / "marv.jsonl"
ANSWERS = [("Capital of France?", "Paris.", "It could be Lyon, or maybe Marseille; hard to say."),
           ("Legs of a spider?", "Eight.", "Six, as with most of the insects."),
           ("Author of Hamlet?", "Shakespeare.", "Charles Dickens, around the year 1900."),
           ("2 + 2?", "4.", "Five, give or take a little."),
           ("Largest planet?", "Jupiter.", "The Moon is bigger than all the planets."),
           ("Days in a week?", "Seven.", "Ten, counting the weekend twice."),
           ("Language of Brazil?", "Portuguese.", "Spanish, as in the rest of South America."),
           ("Symbol for gold?", "Au.", "Gd, from the English word."),
           ("Largest ocean?", "The Pacific.", "The Indian Ocean, by far the largest."),
           ("Colour of a clear sky?", "Blue.", "Green, on most days of the year.")]
runner = CliRunner()


@pytest.fixture
def tunery(tiny_server):
    """Run `tunery ARGS...` against the test server, configured as users do, by environment."""
    env = {"OPENAI_BASE_URL": tiny_server.base_url, "OPENAI_API_KEY": TEST_KEY, "COLUMNS": "250"}

    def run(*args: str, code: int = 0, input: str | None = None):
        result = runner.invoke(app, list(args), env=env, input=input)
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result

    return run


def as_json(result):
    return json.loads(result.stdout)


def test_files_upload_list_get_download_delete(tunery, tmp_path):
    file_id = tunery("files", "upload", str(MARV)).stdout.strip()
    assert file_id.startswith("file-")
    assert file_id in tunery("files", "list").stdout
    assert as_json(tunery("files", "get", file_id, "--json"))["bytes"] == MARV.stat().st_size
    assert file_id in [f["id"] for f in as_json(tunery("files", "list", "--purpose", "fine-tune", "--json"))]
    target = tmp_path / "copy.jsonl"
    tunery("files", "download", file_id, "-o", str(target))
    assert target.read_bytes() == MARV.read_bytes()
    assert tunery("files", "download", file_id, "-o", "-").stdout_bytes == MARV.read_bytes()
    assert f"deleted {file_id}" in tunery("files", "delete", file_id).stdout
    error = tunery("files", "get", file_id, code=1).output.strip()
    assert error.startswith("Error: 404") and file_id in error and len(error.splitlines()) == 1


def test_jobs_create_validates_uploads_and_follows_a_local_file_to_its_model(tunery):
    result = tunery("jobs", "create", "-t", str(MARV), "-m", TINY_MODEL, "--suffix", "cli", "--n-epochs", "2",
                    "--batch-size", "4", "--seed", "3", "--follow")
    output = result.stdout
    assert "The file is valid." in output and "Uploaded training file" in output
    assert "Fine-tuning job started" in output and "The job has successfully completed" in output
    model = output.strip().splitlines()[-1].removeprefix("Fine-tuned model: ")
    assert model.startswith(f"ft:{TINY_MODEL}:default:cli:")

    job = as_json(tunery("jobs", "list", "--json"))[0]
    assert job["fine_tuned_model"] == model and job["hyperparameters"]["n_epochs"] == 2 and job["seed"] == 3
    assert job["id"] in tunery("jobs", "list").stdout
    assert as_json(tunery("jobs", "get", job["id"], "--json"))["status"] == "succeeded"
    assert "Step 6/6" in tunery("jobs", "events", job["id"], "--limit", "100").stdout
    assert [c["step_number"] for c in as_json(tunery("jobs", "checkpoints", job["id"], "--json"))] == [6, 3]
    rows = list(csv.DictReader(io.StringIO(tunery("jobs", "results", job["id"]).stdout)))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]

    assert model in [m["id"] for m in as_json(tunery("models", "list", "--json"))]
    assert as_json(tunery("models", "get", model, "--json"))["owned_by"] == "default"
    assert tunery("chat", "-m", model, "--system", "Be brief", "Hi", "--max-tokens", "4").stdout.strip()
    interactive = tunery("chat", "-m", model, "--max-tokens", "3", input="Hello\nAgain\n\n")
    assert interactive.stdout.count("> ") == 3  # two answers, then the empty line ends
    assert f"deleted {model}" in tunery("models", "delete", model).stdout
    assert tunery("models", "get", model, code=1).output.startswith(f"Error: 404: The model '{model}' does not exist")


def test_an_invalid_local_file_is_reported_and_nothing_is_uploaded(tunery, tmp_path):
    lines = MARV.read_text().splitlines()
    lines[1] = json.dumps({"messages": [{"role": "robot", "content": "beep"}]})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines))
    before = as_json(tunery("files", "list", "--json"))
    result = tunery("jobs", "create", "-t", str(bad), "-m", TINY_MODEL, code=1)
    assert "unknown_role" in result.output and "Error: " in result.output
    assert as_json(tunery("files", "list", "--json")) == before


@pytest.fixture
def preference_file(tmp_path):
    """Ten preference (DPO) pairs: the terse answer preferred to the rambling one."""
    path = tmp_path / "terse.jsonl"
    path.write_text("".join(json.dumps({
        "input": {"messages": [{"role": "system", "content": "Answer tersely."}, {"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": terse}],
        "non_preferred_output": [{"role": "assistant", "content": rambling}]}) + "\n"
        for question, terse, rambling in ANSWERS))
    return path


def test_jobs_create_with_method_dpo_and_beta_trains_a_dpo_job(tunery, preference_file):
    result = tunery("jobs", "create", "-t", str(preference_file), "-m", TINY_MODEL, "--method", "dpo", "--beta", "0.2",
                    "--n-epochs", "1", "--batch-size", "5", "--suffix", "terse")
    assert "preference (DPO) data, 10 valid pairs" in result.stdout and "Uploaded training file" in result.stdout
    created = re.search(r"Created fine-tuning job (ftjob-\S+) \(method dpo, beta 0\.2\)", result.stdout)
    assert created, result.stdout
    job_id = created.group(1)
    job = as_json(tunery("jobs", "get", job_id, "--json"))
    assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    assert job["method"]["dpo"]["hyperparameters"]["n_epochs"] == 1

    model = tunery("jobs", "follow", job_id).stdout.strip().splitlines()[-1].removeprefix("Fine-tuned model: ")
    assert model.startswith(f"ft:{TINY_MODEL}:default:terse:")
    hyperparameters = as_json(tunery("jobs", "get", job_id, "--json"))["method"]["dpo"]["hyperparameters"]
    assert hyperparameters["beta"] == 0.2 and hyperparameters["n_epochs"] == 1 and hyperparameters["batch_size"] == 5


@pytest.mark.parametrize("options, message", [
    (("--beta", "0.2"), "--beta is DPO's hyperparameter: use it with --method dpo"),
    (("--method", "supervised", "--beta", "auto"), "--beta is DPO's hyperparameter: use it with --method dpo"),
    (("--method", "dpo", "--beta", "high"), "--beta must be a number or auto, not 'high'"),
    (("--method", "reinforcement"), "--method must be supervised or dpo, not 'reinforcement'"),
])
def test_a_wrong_method_or_beta_is_one_line_and_exit_2_before_any_upload(tunery, options, message):
    before = as_json(tunery("files", "list", "--json"))
    output = tunery("jobs", "create", "-t", str(MARV), "-m", TINY_MODEL, *options, code=2).output.strip()
    assert output == f"Error: {message}"
    assert as_json(tunery("files", "list", "--json")) == before


def test_a_preference_file_for_a_supervised_job_stops_before_its_upload(tunery, preference_file):
    before = as_json(tunery("files", "list", "--json"))
    result = tunery("jobs", "create", "-t", str(preference_file), "-m", TINY_MODEL, code=1)
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: ") and "supervised fine-tuning needs chat or prompt/completion" in error
    assert error.endswith("(add --method dpo)")
    assert as_json(tunery("files", "list", "--json")) == before


def test_pause_resume_cancel_and_follow_a_cancelled_job(tunery):
    # --json keeps standard output for the JSON: the local file's report goes to standard error.
    job_id = as_json(tunery("jobs", "create", "-t", str(MARV), "-m", TINY_MODEL, "--n-epochs", "50", "--json"))["id"]
    assert as_json(tunery("jobs", "pause", job_id, "--json"))["status"] == "paused"
    assert "paused" in tunery("jobs", "follow", job_id).stdout  # follow stops at a pause, and says how to resume
    assert as_json(tunery("jobs", "resume", job_id, "--json"))["status"] in ("queued", "validating_files")
    tunery("jobs", "cancel", job_id)
    assert "cancelled" in tunery("jobs", "follow", job_id, code=1).output
    assert "409" in tunery("jobs", "cancel", job_id, code=1).output


def test_ctrl_c_while_following_leaves_the_job_running(tunery, monkeypatch):
    file_id = tunery("files", "upload", str(MARV)).stdout.strip()
    job_id = as_json(tunery("jobs", "create", "-t", file_id, "-m", TINY_MODEL, "--n-epochs", "50", "--json"))["id"]

    def interrupt(_seconds):
        raise KeyboardInterrupt  # the user presses Ctrl-C while the command waits

    monkeypatch.setattr(cli_jobs, "time", SimpleNamespace(sleep=interrupt))
    result = tunery("jobs", "follow", job_id, code=130)
    assert f"tunery jobs follow {job_id}" in result.output
    monkeypatch.undo()
    assert as_json(tunery("jobs", "get", job_id, "--json"))["status"] in ("validating_files", "queued", "running")
    tunery("jobs", "cancel", job_id)


def test_complete_prints_the_text_and_its_logprobs(tunery):
    result = tunery("complete", "-m", TINY_MODEL, "Hello", "--max-tokens", "2", "--logprobs", "2", "--temperature", "0")
    assert "logprob" in result.stdout and "likeliest" in result.stdout
    answer = as_json(tunery("complete", "-m", TINY_MODEL, "Hello", "--max-tokens", "2", "--json", "--stop", "x"))
    assert answer["object"] == "text_completion"


def test_errors_are_one_line_with_a_non_zero_exit(tunery, tiny_server):
    for args in (("jobs", "get", "ftjob-nope"), ("models", "delete", TINY_MODEL), ("files", "upload", "missing.jsonl"),
                 ("chat", "-m", "ft:nope", "Hi"), ("jobs", "create", "-t", "nope.jsonl", "-m", TINY_MODEL)):
        output = tunery(*args, code=1).output.strip()
        assert output.startswith("Error: ") and len(output.splitlines()) == 1, output
    unreachable = runner.invoke(app, ["files", "list"], env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                                                             "OPENAI_API_KEY": "k"})
    assert unreachable.exit_code == 1 and "cannot reach the API" in unreachable.output
    wrong_key = runner.invoke(app, ["files", "list", "--api-key", "sk-wrong", "--base-url", tiny_server.base_url])
    assert wrong_key.exit_code == 1 and wrong_key.output.startswith("Error: 401")
