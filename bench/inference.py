"""Serving speed on the embedded SmolLM2-135M-Instruct (or the model --model names: a local
Hugging Face folder, a base model name of the data directory or a hub id), every figure from this
one run:

- single-stream decode tokens/s of tunery's engine (on a CPU: llama.cpp's kernels when
  llama-cpp-python is installed, --backend torch for tunery's own decoder) against plain
  transformers `generate()` (the model loaded as `from_pretrained` gives it, float32 on a CPU; and
  in the engine's dtype when that differs), and llama.cpp's reference (llama-cpp-python's
  `Llama.generate`, greedy, on the embedded model's own Q4_1 GGUF);
- time to first token of the engine, and of a fine-tuned model (a LoRA adapter) never served before;
- the aggregate tokens/s of 8 concurrent streams over a single stream;
- `tunery serve`'s time from start to its first answer (the model already converted).

The last line reads `ratio single_vs_generate=X.XX concurrent8_vs_single=Y.YY single_vs_llamacpp=Z.ZZ`
(the last when llama-cpp-python is installed: make installs it).
Run: python bench/inference.py [--model NAME|FOLDER|HUB_ID] [--tokens N] [--repeats R] [--backend B] [--gguf-type T]"""

from __future__ import annotations

import argparse
import importlib.util
import threading
import time
from pathlib import Path

import torch

from tunery.catalog import EMBEDDED_MODEL, Catalog, _embedded_gguf
from tunery.cli.common import quiet_libraries
from tunery.config import Settings
from tunery.data.render import render_generation_prompt
from tunery.inference.engine import CPU_BACKENDS, Engine
from tunery.inference.llamacpp import GGUF_TYPES
from tunery.storage.blobs import BlobStore
from tunery.inference.types import Delta, SamplingParams
from tunery.weights import Weights

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def engine_single(engine: Engine, weights: Weights, prompt: list[int], tokens: int) -> tuple[float, float]:
    """(decode tokens/s after the first token, seconds to the first token)."""
    started = time.perf_counter()
    first = None
    count = 0
    for event in engine.submit(weights, [prompt], SamplingParams(max_tokens=tokens, temperature=0)):
        if isinstance(event, Delta):
            first = first or time.perf_counter()
        if hasattr(event, "completion_tokens"):
            count = event.completion_tokens
    done = time.perf_counter()
    return (count - 1) / (done - first), first - started


def engine_concurrent(engine: Engine, weights: Weights, prompt: list[int], tokens: int, streams: int) -> float:
    results = []

    def one(seed: int) -> None:
        finished = engine.submit(weights, [prompt], SamplingParams(max_tokens=tokens, temperature=0.8, seed=seed)).collect()
        results.append(finished[0].completion_tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(results) / (time.perf_counter() - started)


def generate_speed(folder, prompt: list[int], tokens: int, dtype: torch.dtype, pad: int) -> float:
    """Decode tokens/s of plain generate() (the prompt's prefill timed apart and taken out)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        def run(n: int) -> float:
            started = time.perf_counter()
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=pad)
            return time.perf_counter() - started

        run(4)  # warm-up
        return (tokens - 1) / (run(tokens) - run(1))


def first_token_of_a_new_adapter(engine: Engine, folder: Path, prompt: list[int]) -> float:
    """Seconds to the first token of a LoRA adapter the engine has never loaded (r=16 on every
    linear layer, as jobs train them; random non-zero weights)."""
    import tempfile

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as adapter:
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                               LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
        model.save_pretrained(adapter)
        started = time.perf_counter()
        for event in engine.submit(Weights("lora", folder, Path(adapter)), [prompt], SamplingParams(max_tokens=2, temperature=0)):
            if isinstance(event, Delta):
                return time.perf_counter() - started
    raise RuntimeError("the adapter gave no token")


def serve_to_first_answer(model: str) -> float:
    """Seconds from starting `tunery serve` (its data directory holding the converted model) to
    its first chat answer."""
    import tempfile

    from server import serve

    with tempfile.TemporaryDirectory() as root:
        data = Path(root) / "data"
        with serve(data) as client:  # the first start converts the embedded model: not timed
            client.chat.completions.create(model=model, messages=PROMPT, max_tokens=1)
        started = time.perf_counter()
        with serve(data) as client:
            client.chat.completions.create(model=model, messages=PROMPT, max_tokens=1)
            return time.perf_counter() - started


def llama_cpp_speed(prompt: list[int], tokens: int) -> float | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    from llama_cpp import Llama

    llm = Llama(model_path=str(_embedded_gguf()), n_ctx=2048, verbose=False)
    first, count = None, 0
    for _ in llm.generate(prompt, temp=0.0):
        first = first or time.perf_counter()
        count += 1
        if count == tokens:
            break
    return (count - 1) / (time.perf_counter() - first)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="a folder, a base model name or a hub id")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs each")
    parser.add_argument("--backend", default="auto", choices=CPU_BACKENDS, help="what decodes on a CPU (TUNERY_CPU_BACKEND)")
    parser.add_argument("--gguf-type", default="auto", choices=GGUF_TYPES, help="llama.cpp's weights (TUNERY_GGUF_TYPE)")
    args = parser.parse_args()
    quiet_libraries()
    settings = Settings()
    folder = Path(args.model).resolve() if Path(args.model).is_dir() else Catalog.from_settings(settings).fetch(args.model)
    weights = Weights("base", folder)
    engine = Engine(cpu_backend=args.backend, gguf_type=args.gguf_type, gguf_dir=BlobStore(settings.data_dir).gguf_dir())
    tokenizer = engine.tokenizer(weights)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt = render_generation_prompt(tokenizer, PROMPT)
    engine.submit(weights, [prompt], SamplingParams(max_tokens=4, temperature=0)).collect()  # load the weights

    singles = [engine_single(engine, weights, prompt, args.tokens) for _ in range(args.repeats)]
    single, first_token = max(s[0] for s in singles), min(s[1] for s in singles)
    concurrent = max(engine_concurrent(engine, weights, prompt, args.tokens, 8) for _ in range(args.repeats))
    plain = max(generate_speed(folder, prompt, args.tokens, torch.float32, pad) for _ in range(args.repeats))
    same_dtype = (max(generate_speed(folder, prompt, args.tokens, engine.dtype, pad) for _ in range(args.repeats))
                  if engine.dtype != torch.float32 else None)  # the torch paths' dtype on a CPU with bfloat16
    llama_cpp = llama_cpp_speed(prompt, args.tokens) if args.model == EMBEDDED_MODEL else None
    adapter_first_token = first_token_of_a_new_adapter(engine, folder, prompt)
    startup = serve_to_first_answer(args.model) if not Path(args.model).is_dir() else None
    print(f"model {args.model}, {args.tokens} tokens, greedy, {torch.get_num_threads()} threads; "
          f"the engine decodes with {engine.backend(weights)}")
    print(f"{'decode tokens/s, one stream':<44}{'':>10}")
    print(f"  {'tunery engine':<42}{single:>10.1f}")
    print(f"  {'transformers generate(), float32':<42}{plain:>10.1f}")
    if same_dtype is not None:
        print(f"  {'transformers generate(), engine dtype':<42}{same_dtype:>10.1f}")
    if llama_cpp is not None:
        print(f"  {'llama.cpp (reference)':<42}{llama_cpp:>10.1f}")
    print(f"{'time to first token, s':<44}{first_token:>10.3f}")
    print(f"{'  of a fine-tuned model never served, s':<44}{adapter_first_token:>10.3f}")
    if startup is not None:
        print(f"{'tunery serve, start to first answer, s':<44}{startup:>10.1f}")
    print(f"{'8 concurrent streams, aggregate tokens/s':<44}{concurrent:>10.1f}")
    if same_dtype is not None:
        print(f"same-dtype ratio engine_vs_generate_{str(engine.dtype).removeprefix('torch.')}={single / same_dtype:.2f}")
    ratios = f"ratio single_vs_generate={single / plain:.2f} concurrent8_vs_single={concurrent / single:.2f}"
    print(ratios + (f" single_vs_llamacpp={single / llama_cpp:.2f}" if llama_cpp else ""))
    engine.close()


if __name__ == "__main__":
    main()
