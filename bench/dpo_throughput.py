"""DPO training throughput: tunery's DPO recipe against TRL's DPOTrainer on the same model (the
embedded SmolLM2-135M-Instruct unless --model names another), preference data
(examples/data/terse_train.jsonl), LoRA configuration (r 16, alpha 32, every linear layer), beta,
learning rate, epochs and batch size, on this machine.

    python bench/dpo_throughput.py [--model NAME|FOLDER|HUB_ID] [--pairs N] [--batch-size N] [--repeats N]

TRL runs as a user gets it: its defaults for a PEFT model (the reference's log-probabilities
computed at each step with the adapter switched off); tunery computes them once before the first
step, and that pass is inside its timed run. Each side runs in its own process (so their memory is
measured apart), the two taking turns, and each side's fastest run counts (this machine's speed
varies by 20% from run to run). The last line reads
`ratio tunery_vs_trl=X.XX pairs_per_s_tunery=A pairs_per_s_trl=B peak_rss_mb_tunery=M peak_rss_mb_trl=N`:
preference pairs trained per second, tunery's over TRL's (goal: at least 1.5), and each side's
peak resident memory. TRL is a benchmark-only dependency: `pip install -e '.[bench]'`.
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
DATA = REPO / "examples" / "data" / "terse_train.jsonl"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}  # as tunery's recipe
BETA = 0.1
LEARNING_RATE = 5e-4
GOAL = 1.5


def model_folder(model: str) -> str:
    """The model's Hugging Face folder: a folder as given, else through tunery's catalog."""
    from tunery.catalog import Catalog
    from tunery.config import Settings

    if Path(model).is_dir():
        return str(Path(model).resolve())
    return str(Catalog.from_settings(Settings()).fetch(model))


def pairs(count: int) -> list[dict]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][:count]


def run_tunery(folder: str, examples: list[dict], batch_size: int) -> dict:
    from tunery.training.dpo import DPOConfig, DPORecipe

    recipe = DPORecipe(DPOConfig(base_model=folder, n_epochs=1, batch_size=batch_size, learning_rate=LEARNING_RATE,
                                 beta=BETA, lora_rank=LORA["r"], lora_alpha=LORA["lora_alpha"],
                                 lora_dropout=LORA["lora_dropout"]))
    started = time.perf_counter()  # the reference's pass, in setup, is part of the work
    recipe.setup(examples)
    result = recipe.train(lambda m: True)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "pairs": len(examples), "mean_loss": sum(m.train_loss for m in result.history) / len(result.history),
            "last_reward_accuracy": result.history[-1].train_reward_accuracy}


def run_trl(folder: str, examples: list[dict], batch_size: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    dataset = Dataset.from_list([{"prompt": e["input"]["messages"], "chosen": e["preferred_output"],
                                  "rejected": e["non_preferred_output"]} for e in examples])
    timing = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kwargs):
            timing["start"] = time.perf_counter()

        def on_train_end(self, *args, **kwargs):
            timing["end"] = time.perf_counter()

    args = DPOConfig(output_dir=os.environ.get("TMPDIR", "/tmp") + "/trl-dpo-bench", num_train_epochs=1,
                     per_device_train_batch_size=batch_size, learning_rate=LEARNING_RATE, beta=BETA,
                     lr_scheduler_type="linear", warmup_steps=0.03, max_grad_norm=1.0, weight_decay=0.0,
                     logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=True, bf16=False, fp16=False,
                     dataloader_num_workers=0, max_length=4096, seed=0, disable_tqdm=True)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(folder), args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(folder),
                         peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA), callbacks=[Clock()])
    output = trainer.train()
    return {"seconds": timing["end"] - timing["start"], "pairs": len(examples), "mean_loss": output.training_loss}


def worker(side: str, model: str, count: int, batch_size: int) -> None:
    folder = model_folder(model)
    result = (run_tunery if side == "tunery" else run_trl)(folder, pairs(count), batch_size)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="a folder, a base model name or a hub id")
    parser.add_argument("--pairs", type=int, default=64, help="pairs of terse_train.jsonl trained (one epoch)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step (tunery's auto on a CPU)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side; the fastest counts")
    parser.add_argument("--worker", choices=["tunery", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.pairs, args.batch_size)
        return
    model_folder(args.model)  # convert or download the model once, outside the timed runs
    runs: dict[str, list[dict]] = {"trl": [], "tunery": []}
    for _ in range(args.repeats):
        for side in runs:
            out = subprocess.run([sys.executable, __file__, "--worker", side, "--model", args.model, "--pairs",
                                  str(args.pairs), "--batch-size", str(args.batch_size)], check=True,
                                 capture_output=True, text=True)
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {side: min(found, key=lambda r: r["seconds"]) for side, found in runs.items()}
    speed = {side: r["pairs"] / r["seconds"] for side, r in best.items()}
    memory = {side: max(run["peak_rss_mb"] for run in found) for side, found in runs.items()}
    print(f"{args.pairs} pairs of {DATA.name}, batch size {args.batch_size}, one epoch, beta {BETA}, {args.model}, "
          f"LoRA r={LORA['r']} on all linear layers")
    for side, r in best.items():
        times = ", ".join(f"{run['seconds']:.1f}" for run in runs[side])
        print(f"  {side:>6}: {speed[side]:6.2f} pairs/s (runs {times} s), mean loss {r['mean_loss']:.3f}, "
              f"peak RSS {memory[side]} MB")
    ratio = speed["tunery"] / speed["trl"]
    print(f"ratio tunery_vs_trl={ratio:.2f} pairs_per_s_tunery={speed['tunery']:.2f} pairs_per_s_trl={speed['trl']:.2f} "
          f"peak_rss_mb_tunery={memory['tunery']} peak_rss_mb_trl={memory['trl']} goal={'met' if ratio >= GOAL else 'not met'}")


if __name__ == "__main__":
    main()
