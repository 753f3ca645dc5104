"""Each popular architecture fine-tunes through the API and answers through it: a tiny random
Llama 3, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3 and Phi-3, each taught the colour-to-fruit task
by a job and asked a colour through chat completions."""

from __future__ import annotations


import pytest

from tests.helpers import COLOR_EXAMPLES, assert_answers_colours, jsonl, upload, wait_until_finished

ARCHITECTURES = ["llama3", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]


@pytest.fixture(scope="module")
def server(start_module_server, tiny_architectures):
    return start_module_server(base_models=tuple(tiny_architectures.values()))


@pytest.fixture(scope="module")
def colours(server):
    return upload(server.client(), jsonl(COLOR_EXAMPLES), "colours.jsonl").id


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_each_architecture_fine_tunes_and_answers_through_the_api(server, colours, name):
    client = server.client()
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=f"tiny-{name}", training_file=colours, suffix=name, seed=0,  # a random seed made it flaky
        hyperparameters={"n_epochs": 30, "batch_size": 4, "learning_rate_multiplier": 10}).id)
    assert job.status == "succeeded", job.error
    assert_answers_colours(client, job.fine_tuned_model)


@pytest.mark.parametrize("name", ["qwen3", "gemma2"])  # the batched decoder, and the general path
def test_a_fully_fine_tuned_model_of_each_path_answers(server, colours, name):
    client = server.client()
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=f"tiny-{name}", training_file=colours, suffix=f"{name}-full", seed=0,
        hyperparameters={"n_epochs": 30, "batch_size": 4, "training_type": "full",
                         "learning_rate_multiplier": 60}).id)  # 3e-3: the tiny model learns slowly
    assert job.status == "succeeded", job.error
    assert job.hyperparameters.training_type == "full"
    assert_answers_colours(client, job.fine_tuned_model)
