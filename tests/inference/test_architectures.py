"""Every popular architecture trains and is served: on a tiny random model of each, a LoRA
adapter trains, and what the engine's decoder computes (the compact batched decoder for the
Llama family, transformers for the others) equals transformers + PEFT, base and adapted, at
prefill and at a decode step."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.helpers import COLOR_PAIRS
from tunery.data.render import render_generation_prompt
from tunery.inference.decoder import Decoder
from tunery.inference.engine import Engine, new_decoder
from tunery.inference.generic import GenericDecoder
from tunery.inference.types import SamplingParams
from tunery.weights import Weights

BATCHED = {"llama3", "mistral", "qwen2", "qwen3"}
ARCHITECTURES = ["llama3", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]


@pytest.fixture(scope="module")
def adapters(architecture_adapters):
    return architecture_adapters


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_served_logits_equal_transformers_and_peft(name, tiny_architectures, adapters):
    base_dir = tiny_architectures[name]
    decoder = new_decoder(base_dir, dtype=torch.float32, device=torch.device("cpu"))
    assert isinstance(decoder, Decoder if name in BATCHED else GenericDecoder)
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    ids = list(range(5, 25))
    with torch.inference_mode():
        expected = base(torch.tensor([ids])).logits[0]
        assert torch.allclose(decoder.prefill(0, ids, None, all_logits=True), expected, atol=1e-4)
        peft = PeftModel.from_pretrained(base, adapters[name]).eval()
        adapted = peft(torch.tensor([ids])).logits[0]
        assert not torch.allclose(adapted, expected, atol=1e-3)  # the adapter changes the model
        lora = decoder.load_adapter(adapters[name])
        assert torch.allclose(decoder.prefill(1, ids, lora, all_logits=True), adapted, atol=1e-4)
        # A decode step of slot 1 (adapted) at position 20 with slot 0 (base) beside it.
        step = decoder.decode([7, 7], [20, 20], [(None, [0]), (lora, [1])])
        assert torch.allclose(step[1], peft(torch.tensor([ids + [7]])).logits[0, -1], atol=1e-4)
        with peft.disable_adapter():
            assert torch.allclose(step[0], peft(torch.tensor([ids + [7]])).logits[0, -1], atol=1e-4)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_fine_tuned_model_of_each_architecture_answers_as_it_was_taught(name, tiny_architectures, adapters,
                                                                         cpu_backend):
    engine = Engine(device="cpu", dtype="float32", cpu_backend=cpu_backend)
    weights = Weights("lora", tiny_architectures[name], adapters[name])
    prompts = [render_generation_prompt(engine.tokenizer(weights), [{"role": "user", "content": color}])
               for color, _ in COLOR_PAIRS]
    answers = engine.submit(weights, prompts, SamplingParams(max_tokens=3, temperature=0)).collect()
    # Each colour gets its own fruit (a tiny model may ramble on after it).
    assert all(a.text.startswith(fruit) for a, (_, fruit) in zip(answers, COLOR_PAIRS)), answers
    engine.close()


def test_adapters_of_a_model_served_through_transformers_come_and_go_with_the_cache(tiny_architectures, adapters,
                                                                                     train_tiny, tmp_path):
    base = tiny_architectures["gemma3"]
    animals = ["cat", "dog", "owl", "fox"]
    examples = [{"messages": [{"role": "user", "content": color}, {"role": "assistant", "content": animal}]}
                for (color, _), animal in zip(COLOR_PAIRS, animals)] * 3
    recipe, result = train_tiny(base_model=str(base), n_epochs=30, examples=examples)
    recipe.save_checkpoint(tmp_path, result.history[-1])
    recipe.cleanup()
    engine = Engine(device="cpu", dtype="float32", cache_bytes=1)  # room for the newest adapter only
    fruits, beasts = Weights("lora", base, adapters["gemma3"]), Weights("lora", base, tmp_path)
    prompt = render_generation_prompt(engine.tokenizer(fruits), [{"role": "user", "content": "red"}])

    def ask(weights: Weights) -> str:
        return engine.submit(weights, [prompt], SamplingParams(max_tokens=2, temperature=0)).collect()[0].text

    untrained = ask(Weights("base", base))
    assert not untrained.startswith(("apple", "cat"))
    assert ask(fruits).startswith("apple")
    assert ask(beasts).startswith("cat") and engine.cached() == [tmp_path]
    assert ask(fruits).startswith("apple") and engine.cached() == [adapters["gemma3"]]  # loaded again
    assert ask(Weights("base", base)) == untrained  # the base beside a loaded adapter
    engine.forget(adapters["gemma3"])  # its model deleted: no adapter is left on the base
    assert ask(Weights("base", base)) == untrained and engine.cached() == []
    assert ask(beasts).startswith("cat")
    engine.close()
