"""Models by Hugging Face id, and aliases for OpenAI's names. The hub cannot be reached here:
tiny models are written into a hub-layout cache the tests make (HF_HUB_OFFLINE=1), and a download
failure comes from a refused connection. Aliases make OpenAI's names work unchanged, down to the
tutorial's curl commands."""

from __future__ import annotations

import json
import os
import subprocess

import openai
import pytest

from tests.helpers import (COLOR_EXAMPLES, COLOR_PAIRS, TEST_KEY, assert_answers_colours, jsonl, upload, wait_until_finished,
                           write_hub_model)

HUB_ID = "tunery-test/tiny-qwen3"
ALIASES = f"gpt-4o-mini-2024-07-18={HUB_ID},gpt-3.5-turbo-0613=tiny-llama,gpt-4o-2024-08-06=tunery-test/absent"


@pytest.fixture(scope="module")
def hub_server(start_module_server, tiny_architectures, tiny_model_dir):
    write_hub_model(os.environ["HF_HOME"], HUB_ID, tiny_architectures["qwen3"])
    return start_module_server(base_models=(tiny_model_dir,), env={"TUNERY_MODEL_ALIASES": ALIASES})


@pytest.fixture(scope="module")
def colours(hub_server):
    return upload(hub_server.client(), jsonl(COLOR_EXAMPLES), "colours.jsonl").id


def test_cached_hub_models_and_aliases_are_listed_and_retrieved(hub_server):
    client = hub_server.client()
    listed = {m.id for m in client.models.list()}
    assert {HUB_ID, "gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0613", "tiny-llama"} <= listed
    assert "gpt-4o-2024-08-06" not in listed  # its target is not here
    assert client.models.retrieve(HUB_ID).owned_by == "tunery"  # a slash in the path
    assert client.models.retrieve("gpt-4o-mini-2024-07-18").id == "gpt-4o-mini-2024-07-18"


def test_a_cached_hub_model_fine_tunes_and_answers(hub_server, colours):
    client = hub_server.client()
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=HUB_ID, training_file=colours, hyperparameters={"n_epochs": 30, "batch_size": 4,
                                                               "learning_rate_multiplier": 10}, seed=0).id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith(f"ft:{HUB_ID}:default::")
    answer = client.chat.completions.create(model=job.fine_tuned_model, temperature=0, max_tokens=3,
                                            messages=[{"role": "user", "content": COLOR_PAIRS[1][0]}])
    assert answer.choices[0].message.content.startswith(COLOR_PAIRS[1][1])
    assert client.chat.completions.create(model=HUB_ID, max_tokens=2, messages=[{"role": "user", "content": "hi"}]).choices


def test_an_alias_trains_and_serves_as_its_target_and_names_the_model(hub_server, colours):
    client = hub_server.client()
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=colours, suffix="alias",
        hyperparameters={"n_epochs": 30, "batch_size": 4, "learning_rate_multiplier": 10}, seed=0).id)
    assert job.status == "succeeded", job.error
    assert job.model == "gpt-4o-mini-2024-07-18" and job.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:default:alias:")
    assert_answers_colours(client, job.fine_tuned_model)
    # The alias answers as its target does.
    ask = dict(temperature=0, max_tokens=5, messages=[{"role": "user", "content": "Say hello"}])
    assert (client.chat.completions.create(model="gpt-4o-mini-2024-07-18", **ask).choices[0].message.content
            == client.chat.completions.create(model=HUB_ID, **ask).choices[0].message.content)


@pytest.mark.parametrize("model, said", [
    ("not a//valid id", "does not exist"),
    ("tunery-test/not-cached", "HF_HUB_OFFLINE"),
    ("gpt-4o-2024-08-06", "an alias of 'tunery-test/absent'"),
])
def test_a_model_that_cannot_be_had_is_a_404_naming_it(hub_server, colours, model, said):
    with pytest.raises(openai.NotFoundError) as caught:
        hub_server.client().fine_tuning.jobs.create(model=model, training_file=colours)
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert model in error["message"] and said in error["message"]


def test_the_tutorials_curl_commands_run_with_only_the_url_and_key_changed(hub_server, tmp_path):
    """Spec 004's three commands: upload, create a job on gpt-3.5-turbo-0613, chat with the result."""
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(e) for e in COLOR_EXAMPLES))
    url, env = hub_server.base_url, {**os.environ, "OPENAI_API_KEY": TEST_KEY}

    def curl(*args: str) -> dict:
        done = subprocess.run(["curl", "-sS", *args], env=env, capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    file = curl(f"{url}/files", "-H", "Authorization: Bearer $OPENAI_API_KEY".replace("$OPENAI_API_KEY", TEST_KEY),
                "-F", "purpose=fine-tune", "-F", f"file=@{tmp_path / 'train.jsonl'}")
    job = curl(f"{url}/fine_tuning/jobs", "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {TEST_KEY}",
               "-d", json.dumps({"training_file": file["id"], "model": "gpt-3.5-turbo-0613"}))
    assert job["status"] == "validating_files" and job["model"] == "gpt-3.5-turbo-0613"
    done = wait_until_finished(hub_server.client(), job["id"])
    assert done.status == "succeeded" and done.fine_tuned_model.startswith("ft:gpt-3.5-turbo-0613:")
    chat = curl(f"{url}/chat/completions", "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {TEST_KEY}",
                "-d", json.dumps({"model": done.fine_tuned_model, "messages": [
                    {"role": "system", "content": "You are an experienced JavaScript developer adept at correcting mistakes"},
                    {"role": "user", "content": "Hello! Can you review this code I wrote?"}]}))
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"


def test_a_download_that_fails_fails_the_job_with_the_reason(start_server, tiny_model_dir, forbidding_hub):
    server = start_server(base_models=(tiny_model_dir,), env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": forbidding_hub})
    client = server.client()
    job = client.fine_tuning.jobs.create(model="tunery-test/never-downloaded", training_file=upload(client).id)
    assert job.status == "validating_files"  # accepted: it may download
    failed = wait_until_finished(client, job.id)
    assert failed.status == "failed" and failed.error.code == "model_not_found" and failed.error.param == "model"
    assert "tunery-test/never-downloaded" in failed.error.message and "could not be downloaded" in failed.error.message
    assert "403" in failed.error.message  # what the hub answered
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert "Downloading tunery-test/never-downloaded from the Hugging Face hub" in messages
