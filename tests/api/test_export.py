"""The weights are yours to take away: `tunery models export` (through GET /tunery/models/ID/export)
writes a fine-tuned model as a merged Hugging Face folder that plain transformers runs to the
same greedy answer tunery serves, as its PEFT adapter naming its base, and as a GGUF file with
every tensor, the tokenizer and the chat template, with an Ollama Modelfile."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import COLOR_EXAMPLES, COLOR_PAIRS, TEST_KEY, TINY_MODEL, jsonl, key_for, upload, wait_until_finished
from tunery.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_server(start_module_server, tiny_model_dir):
    """The tiny model served by the torch decoder in float32, so that an export compares with plain
    transformers token for token (by default a CPU serves through llama.cpp's 8-bit weights, or
    keeps bfloat16 weights, whose rounding tests/inference checks)."""
    return start_module_server(base_models=(tiny_model_dir,),
                               env={"TUNERY_INFERENCE_DTYPE": "float32", "TUNERY_CPU_BACKEND": "torch"})


@pytest.fixture(scope="module")
def tuned(tiny_server):
    """The colour task, fine-tuned (LoRA) on the tiny model."""
    client = tiny_server.client()
    colours = upload(client, jsonl(COLOR_EXAMPLES), "colours.jsonl")
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=colours.id, suffix="export",
        hyperparameters={"n_epochs": 30, "batch_size": 4, "learning_rate_multiplier": 10}, seed=0).id)
    assert job.status == "succeeded", job.error
    return job


def export(server, model: str, out, fmt: str, key: str = TEST_KEY):
    return runner.invoke(app, ["models", "export", model, "-o", str(out), "--format", fmt],
                         env={"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": key})


def served(server, model: str, color: str) -> str:
    return server.client().chat.completions.create(model=model, temperature=0, max_tokens=4,
                                                   messages=[{"role": "user", "content": color}]).choices[0].message.content


def test_the_hf_export_loads_in_transformers_and_answers_as_tunery_serves(tiny_server, tuned, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = export(tiny_server, tuned.fine_tuned_model, tmp_path / "hf", "hf")
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert not list((tmp_path / "hf").glob("adapter_*"))  # merged: a plain model
    for color, fruit in COLOR_PAIRS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": color}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert answer == served(tiny_server, tuned.fine_tuned_model, color) and answer.startswith(fruit)


def test_the_adapter_export_names_its_base_and_peft_loads_it_as_the_merged_model(tiny_server, tuned, tmp_path,
                                                                                 tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert export(tiny_server, tuned.fine_tuned_model, tmp_path / "adapter", "adapter").exit_code == 0
    assert export(tiny_server, tuned.fine_tuned_model, tmp_path / "hf", "hf").exit_code == 0
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == TINY_MODEL and (tmp_path / "adapter" / "tokenizer.json").exists()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([list(range(5, 30))])
    with torch.inference_mode():
        assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-4)


def test_the_gguf_export_holds_every_tensor_the_tokenizer_and_the_template(tiny_server, tuned, tmp_path, tiny_model_dir):
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    result = export(tiny_server, tuned.fine_tuned_model, tmp_path / "gguf", "gguf")
    assert result.exit_code == 0, result.output
    reader = gguf.GGUFReader(tmp_path / "gguf" / "model.gguf")
    config = AutoConfig.from_pretrained(tiny_model_dir)
    names = {t.name for t in reader.tensors}
    per_layer = {"attn_q", "attn_k", "attn_v", "attn_output", "attn_norm", "ffn_gate", "ffn_up", "ffn_down", "ffn_norm"}
    assert names == {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(config.num_hidden_layers) for n in per_layer}
    field = lambda key: bytes(reader.fields[key].parts[-1]).decode()  # noqa: E731
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    assert field("general.architecture") == "llama" and field("tokenizer.ggml.pre") == "smollm"
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == config.vocab_size
    assert field("general.name") == tuned.fine_tuned_model
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert "FROM ./model.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    # The template's own system message when a conversation has none, as the model was trained.
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    assert '{{- if ne .Role "system" }}' in modelfile  # Ollama's .Messages hold the system message too


def test_a_checkpoint_exports_too(tiny_server, tuned, tmp_path):
    checkpoint = next(iter(tiny_server.client().fine_tuning.jobs.checkpoints.list(tuned.id))).fine_tuned_model_checkpoint
    assert export(tiny_server, checkpoint, tmp_path / "ckpt", "adapter").exit_code == 0
    assert (tmp_path / "ckpt" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("model, fmt, status, param", [
    (None, "onnx", 400, "format"),
    (TINY_MODEL, "hf", 400, "model"),
    ("ft:tiny-llama:default::nothere", "hf", 404, "model"),
])
def test_refused_exports_answer_in_openais_envelope(tiny_server, tuned, model, fmt, status, param):
    model = model or tuned.fine_tuned_model
    answer = httpx.get(tiny_server.base_url.removesuffix("/v1") + f"/tunery/models/{model}/export",
                       params={"format": fmt}, headers={"Authorization": f"Bearer {TEST_KEY}"})
    assert answer.status_code == status and answer.json()["error"]["param"] == param


def test_only_the_owner_exports_and_the_cli_says_why_in_one_line(tiny_server, tuned, tmp_path):
    result = export(tiny_server, tuned.fine_tuned_model, tmp_path / "theirs", "hf", key_for(tiny_server, "export-other"))
    assert result.exit_code == 1 and result.output.strip().startswith("Error: 404")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "theirs").exists()
