"""The CUDA paths, on a machine with an NVIDIA GPU (skipped without one; CI has none): training
in bfloat16 on the GPU TUNERY_DEVICE names, the attention implementation chosen by what is
installed, the engine serving in bfloat16 on the GPU (batched decoder and the general
transformers path) with the logits transformers computes, and a job trained and chatted with
through the API on the GPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.helpers import COLOR_EXAMPLES, TINY_MODEL, assert_answers_colours, jsonl, upload, wait_until_finished
from tunery.devices import attention_implementation, describe, resolve_device, serving_dtype, training_dtype

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch sees none)")]

LAST_GPU = f"cuda:{torch.cuda.device_count() - 1}" if torch.cuda.is_available() else "cuda"


def test_the_named_gpu_is_used_in_bfloat16():
    device = resolve_device(LAST_GPU)
    assert device == torch.device("cuda", torch.cuda.device_count() - 1)
    assert "cuda" in describe(device)
    assert training_dtype(device) == torch.bfloat16
    assert serving_dtype("auto", device) == torch.bfloat16
    expected = "flash_attention_2" if importlib.util.find_spec("flash_attn") else None
    assert attention_implementation("auto", device, torch.bfloat16) == expected


def test_lora_training_on_the_gpu_is_bfloat16_and_learns(train_tiny):
    recipe, result = train_tiny(device=LAST_GPU)
    base = recipe.model.get_base_model()
    assert next(base.parameters()).device == resolve_device(LAST_GPU)
    assert base.get_input_embeddings().weight.dtype == torch.bfloat16
    expected = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    assert base.config._attn_implementation == expected
    losses = [m.train_loss for m in result.history]
    assert sum(losses[-5:]) / 5 < 0.3 * sum(losses[:5]) / 5
    recipe.cleanup()


def test_full_training_on_the_gpu_learns(train_tiny):
    recipe, result = train_tiny(device=LAST_GPU, training_type="full", learning_rate=1e-3)
    losses = [m.train_loss for m in result.history]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    recipe.cleanup()


@pytest.mark.parametrize("name", ["qwen3", "gemma2"])  # the batched decoder, and the general path
def test_the_engine_serves_bfloat16_on_the_gpu_like_transformers(name, tiny_architectures):
    from transformers import AutoModelForCausalLM

    from tunery.inference.engine import new_decoder

    device = resolve_device(LAST_GPU)
    decoder = new_decoder(tiny_architectures[name], dtype=torch.bfloat16, device=device)
    reference = AutoModelForCausalLM.from_pretrained(tiny_architectures[name], dtype=torch.bfloat16).to(device).eval()
    ids = list(range(5, 25))
    with torch.inference_mode():
        expected = reference(torch.tensor([ids], device=device)).logits[0].float()
        served = decoder.prefill(0, ids, None, all_logits=True).float()
    assert served.device.type == "cuda"
    # bfloat16 keeps 8 bits of mantissa: the two orders of summation agree to about 1%.
    assert torch.allclose(served, expected, atol=0.05 * expected.abs().max().item())
    assert (served.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9


def test_a_job_trains_and_answers_on_the_gpu_through_the_api(start_server, tiny_model_dir):
    server = start_server(base_models=(tiny_model_dir,), env={"TUNERY_DEVICE": LAST_GPU})
    client = server.client()
    training = upload(client, jsonl(COLOR_EXAMPLES), "colours.jsonl")
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=training.id,
        hyperparameters={"n_epochs": 15, "batch_size": 4, "learning_rate_multiplier": 10}).id)
    assert job.status == "succeeded", job.error
    assert_answers_colours(client, job.fine_tuned_model)
    assert "computing on" in server.output()
