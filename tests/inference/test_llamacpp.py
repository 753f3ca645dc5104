"""llama.cpp as the CPU engine's forward pass: the GGUF conversions of a base model and of its
LoRA adapters give the logits of transformers + PEFT (to float16 precision), rows of the base and
of an adapter decode in one step, a prompt beginning as a cached sequence shares its cells and
gets the logits it would get alone, conversions are made once (q8_0 unless asked otherwise), and
sequences the shared KV cache cannot hold at once wait for room instead of failing."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.helpers import COLOR_PAIRS
from tunery.data.render import render_generation_prompt
from tunery.inference import llamacpp
from tunery.inference.decoder import kv_bytes_per_token
from tunery.inference.engine import Engine
from tunery.inference.types import SamplingParams
from tunery.weights import Weights

pytestmark = pytest.mark.skipif(not llamacpp.installed(), reason="llama-cpp-python is not installed")
GGUF_ARCHITECTURES = ["llama3", "mistral", "qwen2", "qwen3"]  # of the tiny_architectures fixture
IDS = list(range(5, 45))


def close(served: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal to float16 weights' precision: every logit within 1% of the largest."""
    return bool((served - expected).abs().max() < 0.01 * expected.abs().max())


@pytest.fixture(scope="module")
def adapters(architecture_adapters):
    return architecture_adapters


@pytest.mark.parametrize("name", GGUF_ARCHITECTURES)
def test_the_gguf_base_and_adapter_give_the_logits_of_transformers_and_peft(name, tiny_architectures, adapters,
                                                                           tmp_path):
    folder = tiny_architectures[name]
    decoder = llamacpp.LlamaCppDecoder(folder, gguf_dir=tmp_path, gguf_type="f16", sequences=4)
    base = AutoModelForCausalLM.from_pretrained(folder).eval()
    peft = PeftModel.from_pretrained(base, adapters[name]).eval()
    lora = decoder.load_adapter(adapters[name])
    with torch.inference_mode():
        adapted = peft(torch.tensor([IDS])).logits[0]
        with peft.disable_adapter():
            plain = peft(torch.tensor([IDS])).logits[0]
            plain_next = peft(torch.tensor([IDS + [7]])).logits[0, -1]
        adapted_next = peft(torch.tensor([IDS + [7]])).logits[0, -1]
    assert not close(plain, adapted)  # the adapter changes the model
    for slot in (0, 1):
        assert decoder.reserve(slot, 64)
    assert close(decoder.prefill(0, IDS, None, all_logits=True), plain)
    assert close(decoder.prefill(1, IDS, lora, all_logits=True), adapted)
    step = decoder.decode([7, 7], [len(IDS)] * 2, [(None, [0]), (lora, [1])])  # base and adapter in one step
    assert close(step[0], plain_next) and close(step[1], adapted_next)
    decoder.release_adapter(lora)
    decoder.close()


def test_a_prompt_beginning_as_a_cached_sequence_shares_its_cells_and_logits(tiny_model_dir, tmp_path):
    decoder = llamacpp.LlamaCppDecoder(tiny_model_dir, gguf_dir=tmp_path, sequences=4)
    longer = IDS + [9, 10, 11]
    for slot in (0, 1, 2):
        decoder.reserve(slot, 64)
    decoder.prefill(0, IDS, None)
    decoder.decode([8], [len(IDS)], [(None, [0])])  # slot 0 goes on differently: IDS + [8]
    assert decoder._share_prefix(1, longer, None) == len(IDS)  # what slot 1 would share (cells shared, none copied)
    decoder.free(1)
    shared = decoder.prefill(1, longer, None)
    decoder.free(0)  # the sequence it shared with ends: its cells stay for slot 1
    following = decoder.decode([0, 3], [0, len(longer)], [(None, [1])])[1]  # tokens and positions by slot
    decoder.free(1)
    computed = decoder.prefill(2, longer, None)  # nothing left to share: every token computed
    # The same logits, to the float16 cache's precision (attention adds its cells in another order).
    assert close(shared, computed)
    assert close(following, decoder.decode([0, 0, 3], [0, 0, len(longer)], [(None, [2])])[2])
    decoder.close()


def test_a_base_is_converted_once_to_q8_0_by_default_or_to_the_type_asked(tiny_model_dir, tmp_path):
    converted = llamacpp.base_gguf(tiny_model_dir, tmp_path)
    assert converted.name.endswith(".q8_0.gguf") and list(tmp_path.iterdir()) == [converted]  # nothing left aside
    made = converted.stat().st_mtime_ns
    assert llamacpp.base_gguf(tiny_model_dir, tmp_path) == converted and converted.stat().st_mtime_ns == made
    smaller = llamacpp.base_gguf(tiny_model_dir, tmp_path, "q4_0")
    assert smaller.name.endswith(".q4_0.gguf") and smaller.stat().st_size < converted.stat().st_size
    with pytest.raises(ValueError, match="TUNERY_GGUF_TYPE"):
        llamacpp.base_gguf(tiny_model_dir, tmp_path, "q3_k")


def test_sequences_the_kv_cache_cannot_hold_at_once_wait_for_room_in_order(tiny_model_dir, monkeypatch):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    kv_cache_bytes = 1024 * kv_bytes_per_token(config, llamacpp.KV_ELEMENT_BYTES)  # 1024 tokens
    refused, started = [], []
    reserve = llamacpp.LlamaCppDecoder.reserve

    def counting(self, slot, length):
        (started if (room := reserve(self, slot, length)) else refused).append(length)
        return room

    monkeypatch.setattr(llamacpp.LlamaCppDecoder, "reserve", counting)
    engine = Engine(device="cpu", cpu_backend="llamacpp", kv_cache_bytes=kv_cache_bytes)
    weights = Weights("base", tiny_model_dir)
    assert engine.context_length(weights) == 1024  # the tiny model's context fits
    prompt = render_generation_prompt(engine.tokenizer(weights), [{"role": "user", "content": COLOR_PAIRS[0][0]}])
    # Each asks for 600 tokens: two cannot be in the cache together, so they run one after the other.
    streams = [engine.submit(weights, [prompt], SamplingParams(max_tokens=600 + i, temperature=1.0, seed=i))
               for i in range(3)]
    for stream in streams:
        assert stream.collect()[0].completion_tokens > 0
    engine.close()
    assert refused and [n - len(prompt) for n in started] == [600, 601, 602]  # waited, and in their order


def test_a_fully_fine_tuned_model_evicted_from_the_cache_frees_its_llama_cpp_memory(tiny_model_dir, tmp_path):
    copies = []
    for name in ("full-a", "full-b"):  # two "fully fine-tuned" models: folders of their own weights
        folder = tmp_path / name
        folder.mkdir()
        for item in tiny_model_dir.iterdir():
            (folder / item.name).symlink_to(item)
        copies.append(Weights("full", folder))
    engine = Engine(device="cpu", cpu_backend="llamacpp", cache_bytes=1)  # room for the newest only
    prompt = render_generation_prompt(engine.tokenizer(copies[0]), [{"role": "user", "content": "red"}])
    first = engine.submit(copies[0], [prompt], SamplingParams(max_tokens=2, temperature=0)).collect()[0].text
    assert engine.backend(copies[0]).startswith("llama.cpp")
    decoder = engine.models.fine_tuned[copies[0].folder].decoder
    assert engine.submit(copies[1], [prompt], SamplingParams(max_tokens=2, temperature=0)).collect()[0].text == first
    assert engine.cached() == [copies[1].folder] and decoder._ctx is None  # evicted, and its context freed
    engine.close()
