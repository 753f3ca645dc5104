"""A GGUF export answers in llama.cpp as tunery serves it: the colour task fine-tuned (LoRA) on
the tiny Llama, exported as GGUF (LoRA merged, float16), loaded by llama-cpp-python and asked each
colour greedily, gives the tokens tunery's engine gives. Runs where llama-cpp-python is installed
(`pip install llama-cpp-python`, a compile of some minutes); skipped elsewhere."""

from __future__ import annotations

import pytest

from tests.helpers import COLOR_PAIRS
from tunery.data.render import render_generation_prompt
from tunery.export import export
from tunery.inference.engine import Engine
from tunery.inference.types import SamplingParams
from tunery.weights import Weights

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

ANSWER_TOKENS = 3


def test_llama_cpp_answers_the_gguf_export_as_tunery_serves(train_tiny, tiny_model_dir, tmp_path):
    recipe, result = train_tiny()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    recipe.save_checkpoint(adapter, result.history[-1])
    recipe.cleanup()
    weights = Weights("lora", tiny_model_dir, adapter)
    (tmp_path / "gguf").mkdir()
    export(weights, "gguf", tmp_path / "gguf", name="colours", base_id="tiny")

    engine = Engine(device="cpu", dtype="float32", cpu_backend="torch")  # float32 weights, as the export's float16
    tokenizer = engine.tokenizer(weights)
    llm = llama_cpp.Llama(model_path=str(tmp_path / "gguf" / "model.gguf"), n_ctx=256, verbose=False)
    ends = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    for color, fruit in COLOR_PAIRS:
        prompt = render_generation_prompt(tokenizer, [{"role": "user", "content": color}])
        served = engine.submit(weights, [prompt], SamplingParams(max_tokens=ANSWER_TOKENS, temperature=0)).collect()[0]
        assert served.text.startswith(fruit)
        theirs = []
        for token in llm.generate(prompt, temp=0.0, reset=True):
            if token in ends:
                break
            theirs.append(token)
            if len(theirs) == ANSWER_TOKENS:
                break
        assert tokenizer.decode(theirs) == served.text, (color, tokenizer.decode(theirs), served.text)
    engine.close()
