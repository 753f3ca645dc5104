"""The engine on the tiny model: its decoder gives the logits of transformers + PEFT, adapters
are served apart even in one batch and even when their folders share a name, the base model runs
beside them, and the least recently used adapters leave memory under a small budget."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.helpers import COLOR_PAIRS as PAIRS
from tunery.data.render import render_generation_prompt
from tunery.inference.decoder import Adapter, Decoder
from tunery.inference.types import UnsupportedModel
from tunery.inference.engine import Engine
from tunery.inference.types import Finished, SamplingParams
from tunery.weights import Weights

ANIMALS = ["cat", "dog", "owl", "fox"]
GREEDY = SamplingParams(max_tokens=3, temperature=0)


def adapter(train, folder: Path, answers: list[str]) -> Path:
    examples = [{"messages": [{"role": "user", "content": color}, {"role": "assistant", "content": said}]}
                for (color, _), said in zip(PAIRS, answers)] * 3
    recipe, result = train(examples=examples)
    folder.mkdir(parents=True)
    recipe.save_checkpoint(folder, result.history[-1])
    recipe.cleanup()
    return folder


@pytest.fixture(scope="module")
def adapters(train_tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return (adapter(train_tiny, root / "job-a" / "step-45", [fruit for _, fruit in PAIRS]),
            adapter(train_tiny, root / "job-b" / "step-45", ANIMALS))


def weights(base: Path, adapter: Path | None = None) -> Weights:
    return Weights("lora", base, adapter) if adapter else Weights("base", base)


@pytest.mark.parametrize("keep_wide", [True, False])
def test_bfloat16_weights_computed_in_float32_give_the_logits_of_the_rounded_model(tiny_model_dir, monkeypatch,
                                                                                    keep_wide):
    """The CPU default without native bfloat16: weights kept in bfloat16, arithmetic in float32.
    Many rows (a prompt, five streams) are multiplied in float32 (by a float32 copy, or by the
    bfloat16 matrix widened when the model is too large for a copy): the logits of the model with
    bfloat16-rounded weights, to float32 precision. Up to NARROW_ROWS rows are multiplied in
    bfloat16: close to them, the same likeliest token."""
    import tunery.inference.decoder as decoder_module

    if not keep_wide:
        monkeypatch.setattr(decoder_module, "WIDE_COPY_MAX_BYTES", 0)
    decoder = Decoder(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"), weights_dtype=torch.bfloat16)
    assert (decoder.lm_head.wide is not None) == keep_wide and decoder.lm_head.narrow.dtype == torch.bfloat16
    rounded = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for parameter in rounded.parameters():
        if parameter.dim() == 2:  # the matrices; norms stay float32 in the decoder too
            parameter.data = parameter.data.bfloat16().float()
    ids = list(range(5, 25))
    with torch.inference_mode():
        expected = rounded(torch.tensor([ids])).logits[0]
        assert torch.allclose(decoder.prefill(0, ids, None, all_logits=True), expected, atol=1e-4)
        following = rounded(torch.tensor([ids + [7]])).logits[0, -1]
        many = decoder_module.NARROW_ROWS + 1
        for slot in range(1, many):
            decoder.prefill(slot, ids, None)
        wide_step = decoder.decode([7] * many, [20] * many, [(None, list(range(many)))])
        assert torch.allclose(wide_step, following.expand(many, -1), atol=1e-4)
        narrow_step = decoder.decode([7], [20], [(None, [0])])[0]
    assert (narrow_step - following).abs().max() < 0.02 * following.abs().max()
    assert narrow_step.argmax() == following.argmax()


def test_the_engine_keeps_bfloat16_weights_on_a_cpu_by_default():
    engine = Engine(device="cpu")  # for the torch decoder (TUNERY_CPU_BACKEND=torch, or no llama.cpp)
    assert engine.weights_dtype == torch.bfloat16
    assert Engine(device="cpu", dtype="float32").weights_dtype == torch.float32  # what was asked for
    engine.close()


def test_the_decoder_gives_the_logits_of_transformers_and_peft(tiny_model_dir, adapters):
    decoder = Decoder(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = list(range(5, 25))
    with torch.inference_mode():
        expected = base(torch.tensor([ids])).logits[0]
        assert torch.allclose(decoder.prefill(0, ids, None, all_logits=True), expected, atol=1e-4)
        peft = PeftModel.from_pretrained(base, adapters[0]).eval()
        expected = peft(torch.tensor([ids])).logits[0]
        lora = Adapter(adapters[0], decoder)
        assert torch.allclose(decoder.prefill(1, ids, lora, all_logits=True), expected, atol=1e-4)
        # A decode step at position 20 of slot 1, with slot 0 beside it on the base model.
        step = decoder.decode([7, 7], [20, 20], [(lora, [1])])
        following = peft(torch.tensor([ids + [7]])).logits[0, -1]
        assert torch.allclose(step[1], following, atol=1e-4)


def test_adapters_are_served_apart_in_one_batch_beside_the_base_model(tiny_model_dir, adapters, cpu_backend):
    fruits, animals = adapters
    engine = Engine(device="cpu", dtype="float32", cpu_backend=cpu_backend)
    tokenizer = engine.tokenizer(weights(tiny_model_dir))

    def submit(folder, color):
        prompt = render_generation_prompt(tokenizer, [{"role": "user", "content": color}])
        return engine.submit(weights(tiny_model_dir, folder), [prompt], GREEDY)

    # Everything submitted before anything is read: the engine decodes them together.
    streams = [(submit(fruits, c), submit(animals, c), submit(None, c), f, a) for (c, f), a in zip(PAIRS, ANIMALS)]
    for fruit_stream, animal_stream, base_stream, fruit, animal in streams:
        assert fruit_stream.collect()[0].text.startswith(fruit)
        assert animal_stream.collect()[0].text.startswith(animal)
        base = base_stream.collect()[0].text
        assert not base.startswith(fruit) and not base.startswith(animal)
    engine.close()


def test_least_recently_used_adapters_leave_memory_under_the_budget(tiny_model_dir, adapters, cpu_backend):
    fruits, animals = adapters
    engine = Engine(device="cpu", dtype="float32", cache_bytes=1, cpu_backend=cpu_backend)  # room for the newest only
    tokenizer = engine.tokenizer(weights(tiny_model_dir))
    prompt = render_generation_prompt(tokenizer, [{"role": "user", "content": PAIRS[0][0]}])

    def ask(folder):
        return engine.submit(weights(tiny_model_dir, folder), [prompt], GREEDY).collect()[0].text

    assert ask(fruits).startswith(PAIRS[0][1])
    assert ask(animals).startswith(ANIMALS[0])
    assert engine.cached() == [animals]
    assert ask(fruits).startswith(PAIRS[0][1])  # loaded again
    assert engine.cached() == [fruits]
    engine.forget(fruits)
    ask(None)
    assert engine.cached() == []
    engine.close()


def test_a_closed_stream_stops_its_generation_at_once(tiny_model_dir, cpu_backend):
    engine = Engine(device="cpu", dtype="float32", cpu_backend=cpu_backend)
    stream = engine.submit(weights(tiny_model_dir), [[5, 6, 7]], SamplingParams(max_tokens=900, temperature=1.0))
    first = next(iter(stream))
    assert first.text
    stream.close()  # what the API does when the client goes away mid-stream
    deadline = time.time() + 10
    while engine.busy():
        assert time.time() < deadline, "the sequence kept decoding"
        time.sleep(0.01)
    events = list(stream)  # the stream ends without a Finished event
    assert not any(isinstance(e, Finished) for e in events)
    engine.close()


def test_gpt2_is_served_through_transformers_and_a_model_that_is_no_causal_lm_is_refused(tmp_path, smol_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    gpt2 = tmp_path / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(smol_tokenizer), n_embd=32, n_layer=1, n_head=2,
                               n_positions=64)).save_pretrained(gpt2)
    smol_tokenizer.save_pretrained(gpt2)
    engine = Engine(device="cpu", dtype="float32")
    answer = engine.submit(weights(gpt2), [[5, 6]], GREEDY).collect()[0]
    assert answer.completion_tokens >= 1 and answer.finish_reason in ("length", "stop")
    assert engine.context_length(weights(gpt2)) == 64  # GPT-2 names its context n_positions

    t5 = tmp_path / "tiny-t5"
    T5ForConditionalGeneration(T5Config(vocab_size=len(smol_tokenizer), d_model=32, d_ff=64, num_layers=1,
                                        num_heads=2, d_kv=16)).save_pretrained(t5)
    smol_tokenizer.save_pretrained(t5)
    with pytest.raises(UnsupportedModel, match="tiny-t5"):
        engine.submit(weights(t5), [[5, 6]], GREEDY)
    assert engine.busy() == 0
    engine.close()
