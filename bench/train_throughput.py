"""Training throughput: tunery's SFT recipe against TRL's SFTTrainer on the same model (the
embedded SmolLM2-135M-Instruct unless --model names another), data (orders_train.jsonl, rendered
once by tunery: the same token ids and the same loss masks), LoRA configuration, epochs and batch
size, on this machine.

    python bench/train_throughput.py [--model NAME|FOLDER|HUB_ID] [--epochs N] [--batch-size N ...] [--repeats N]

--model takes a local Hugging Face folder, a base model name of the data directory, or a hub id
("Qwen/Qwen2.5-0.5B-Instruct", from the Hugging Face cache or downloaded into it).

Each side runs in its own process (so their memory is measured apart), the two sides taking
turns, and each side's fastest run counts: this machine's speed varies by 20% from run to run
with nothing else running, and the fastest run is the one least disturbed. Both sides are
compared at the batch size "auto" gives a user for this data set and at batch 8. The last line
reads `ratio tunery_vs_trl_batch1=X.XX tunery_vs_trl_batch8=Y.YY peak_rss_mb=N`: trained tokens
per second (tokens that carry loss) of tunery over TRL's at each batch size, and tunery's peak
resident memory. TRL is a benchmark-only dependency: `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from tunery.catalog import EMBEDDED_MODEL

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data" / "orders_train.jsonl"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}  # as tunery's recipe
LEARNING_RATE = 1e-3
WIDE_BATCH = 8  # compared besides the batch size a user gets


def model_folder(model: str) -> str:
    """The model's Hugging Face folder: a folder as given, else through tunery's catalog (the
    embedded model converted once, a hub model downloaded once)."""
    from tunery.catalog import Catalog
    from tunery.config import Settings

    if Path(model).is_dir():
        return str(Path(model).resolve())
    return str(Catalog.from_settings(Settings()).fetch(model))


def rendered(folder: str):
    from transformers import AutoTokenizer

    from tunery.data.render import render_example
    from tunery.data.validate import load_examples

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return [render_example(tokenizer, e, max_length=4096) for e in load_examples(DATA)]


def run_tunery(folder: str, epochs: int, batch_size: int) -> dict:
    from tunery.training.sft import SFTConfig, SFTRecipe

    recipe = SFTRecipe(SFTConfig(base_model=folder, n_epochs=epochs, batch_size=batch_size, learning_rate=LEARNING_RATE,
                                 lora_rank=LORA["r"], lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"]))
    recipe.setup([json.loads(line) for line in DATA.read_text().splitlines()])
    trained = sum(e.trained_tokens for e in recipe.examples) * epochs
    started = time.perf_counter()
    result = recipe.train(lambda m: True)
    seconds = time.perf_counter() - started
    mean_loss = sum(m.train_loss for m in result.history) / len(result.history)
    return {"seconds": seconds, "trained_tokens": trained, "mean_loss": mean_loss}


def run_trl(folder: str, epochs: int, batch_size: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    examples = rendered(folder)
    dataset = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    timing = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kwargs):
            timing["start"] = time.perf_counter()

        def on_train_end(self, *args, **kwargs):
            timing["end"] = time.perf_counter()

    args = SFTConfig(output_dir=os.environ.get("TMPDIR", "/tmp") + "/trl-bench", num_train_epochs=epochs,
                     per_device_train_batch_size=batch_size, learning_rate=LEARNING_RATE, lr_scheduler_type="linear",
                     warmup_steps=0.03, max_grad_norm=1.0, weight_decay=0.0, logging_steps=10_000, save_strategy="no",
                     report_to=[], use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0, max_length=4096,
                     seed=0, disable_tqdm=True)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(folder), args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(folder),
                         peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA), callbacks=[Clock()])
    output = trainer.train()
    trained = sum(e.trained_tokens for e in examples) * epochs
    return {"seconds": timing["end"] - timing["start"], "trained_tokens": trained, "mean_loss": output.training_loss}


def worker(side: str, model: str, epochs: int, batch_size: int) -> None:
    folder = model_folder(model)
    result = (run_tunery if side == "tunery" else run_trl)(folder, epochs, batch_size)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps(result))


def compare(model: str, epochs: int, batch_size: int, repeats: int) -> tuple[float, int]:
    """Both sides at one batch size: (tunery's trained tokens/s over TRL's, tunery's peak RSS MB)."""
    runs: dict[str, list[dict]] = {"trl": [], "tunery": []}
    for _ in range(repeats):
        for side in runs:
            out = subprocess.run([sys.executable, __file__, "--worker", side, "--model", model, "--epochs", str(epochs),
                                  "--batch-size", str(batch_size)], check=True, capture_output=True, text=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {side: min(found, key=lambda r: r["seconds"]) for side, found in runs.items()}
    print(f"batch size {batch_size}, epochs {epochs}, {DATA.name}, {model}, LoRA r={LORA['r']} on all linear layers")
    for side, r in results.items():
        times = ", ".join(f"{run['seconds']:.1f}" for run in runs[side])
        print(f"  {side:>6}: {r['trained_tokens'] / r['seconds']:8.1f} trained tokens/s ({r['trained_tokens']} in "
              f"{r['seconds']:.1f} s; runs {times} s), mean training loss {r['mean_loss']:.3f}, "
              f"peak RSS {max(run['peak_rss_mb'] for run in runs[side])} MB")
    ratio = (results["tunery"]["trained_tokens"] / results["tunery"]["seconds"]) / \
            (results["trl"]["trained_tokens"] / results["trl"]["seconds"])
    return ratio, max(run["peak_rss_mb"] for run in runs["tunery"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="a folder, a base model name or a hub id")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, action="append", default=None,
                        help=f"batch sizes to compare at (repeatable); default: tunery's auto batch size and {WIDE_BATCH}")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side; the fastest counts")
    parser.add_argument("--worker", choices=["tunery", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.epochs, args.batch_size[0])
        return
    if args.batch_size is None:
        from tunery.devices import resolve_device
        from tunery.training.hyperparameters import default_batch_size

        users = default_batch_size(sum(1 for _ in DATA.open()), resolve_device("auto").type)  # 8 on a CPU
        args.batch_size = sorted({users, WIDE_BATCH})
    model_folder(args.model)  # convert or download the model once, outside the timed runs
    ratios = {size: compare(args.model, args.epochs, size, args.repeats) for size in args.batch_size}
    print("ratio " + " ".join(f"tunery_vs_trl_batch{size}={ratio:.2f}" for size, (ratio, _) in ratios.items())
          + f" peak_rss_mb={max(rss for _, rss in ratios.values())}")


if __name__ == "__main__":
    main()
