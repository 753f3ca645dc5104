"""Training scaling over processes: the same supervised job (LoRA, or with --training-type full
sharded over the processes: training/sharded.py; the embedded SmolLM2-135M-Instruct unless --model
names another, examples/data/orders_train.jsonl, batch 8, one epoch) trained by tunery's recipe on
1 process and data parallel on N (training/distributed.py, as a worker with TUNERY_WORKER_DEVICES
runs it), on this machine.

    python bench/train_scaling.py [--model NAME|FOLDER|HUB_ID] [--device cpu|cuda] [--processes 1,2]
                                  [--training-type lora|full] [--examples N] [--batch-size N] [--repeats N]

On a CPU the processes share the machine's cores (each gets cores / N torch threads): on a 2-core
machine two processes cannot be faster than one, and the ratio shows what the distribution costs
(gradient all-reduce, each process's fixed per-row work, the rank 0 decisions each step). With
--device cuda, process r trains on cuda:r and the lines give each GPU's throughput and the scaling
efficiency (tokens/s on N GPUs over N times one GPU's).

Each process count runs in a subprocess of its own (rank 0 there, the other ranks spawned by it),
the counts taking turns, and each count's fastest run counts. Timed: train() only (model loading
and the ranks' start are setup). Tokens: every token of every example trained (what a job bills).
The last line reads `ratio N_vs_1=X.XX tokens_per_s_1=A tokens_per_s_N=B ... baseline=1 process`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from train_throughput import DATA, model_folder

from tunery.catalog import EMBEDDED_MODEL


def run(folder: str, processes: int, device: str, examples: int, batch_size: int, training_type: str) -> dict:
    """Train the job once on `processes` processes; its seconds, tokens and losses."""
    from tunery.training import distributed
    from tunery.training.hyperparameters import Resolved
    from tunery.training.methods import METHODS, RecipeInputs
    from tunery.weights import Weights

    data = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][:examples]
    inputs = RecipeInputs(Weights("base", Path(folder)), Resolved(n_epochs=1, batch_size=batch_size,
                                                                  learning_rate_multiplier=1.0, training_type=training_type),
                          seed=0, device="cuda:0" if device == "cuda" else "cpu", attention="auto", resume_from=None)
    devices = [f"cuda:{rank}" if device == "cuda" else "cpu" for rank in range(processes)]
    recipe = METHODS["supervised"].build(inputs) if processes == 1 else distributed.build("supervised", inputs, devices)
    try:
        recipe.setup(data)
        started = time.perf_counter()
        result = recipe.train(lambda m: True)
        seconds = time.perf_counter() - started
    finally:
        recipe.cleanup()
    return {"seconds": seconds, "tokens": result.trained_tokens, "steps": result.steps,
            "last_loss": result.history[-1].train_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="a folder, a base model name or a hub id")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--processes", default="1,2", help="process counts to compare, the first the baseline")
    parser.add_argument("--examples", type=int, default=64, help="the first N examples of the data set")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--training-type", choices=["lora", "full"], default="lora")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each process count; the fastest counts")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(run(model_folder(args.model), args.worker, args.device, args.examples, args.batch_size,
                             args.training_type)))
        return

    counts = [int(n) for n in args.processes.split(",")]
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    for _ in range(args.repeats):
        for n in counts:
            out = subprocess.run([sys.executable, __file__, "--worker", str(n), "--model", args.model, "--device",
                                  args.device, "--examples", str(args.examples), "--batch-size", str(args.batch_size),
                                  "--training-type", args.training_type],
                                 check=True, capture_output=True, text=True)
            runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {n: min(found, key=lambda r: r["seconds"]) for n, found in runs.items()}
    speed = {n: r["tokens"] / r["seconds"] for n, r in best.items()}
    base = counts[0]
    print(f"{args.model}, {DATA.name} (first {args.examples}), batch {args.batch_size}, 1 epoch, "
          f"{'LoRA' if args.training_type == 'lora' else 'full, sharded over the processes'}, on {args.device}")
    for n, r in best.items():
        times = ", ".join(f"{run['seconds']:.1f}" for run in runs[n])
        line = (f"  {n} process{'es' if n > 1 else ''}: {speed[n]:8.1f} tokens/s ({r['tokens']} tokens, {r['steps']} "
                f"steps in {r['seconds']:.1f} s; runs {times} s), last training loss {r['last_loss']:.4f}")
        if args.device == "cuda":
            line += (f", {speed[n] / n:.1f} tokens/s per GPU, scaling efficiency "
                     f"{speed[n] / (n / base * speed[base]):.0%}")
        print(line)
    ratios = " ".join(f"{n}_vs_{base}={speed[n] / speed[base]:.2f}" for n in counts[1:])
    figures = " ".join(f"tokens_per_s_{n}={speed[n]:.1f}" for n in counts)
    print(f"ratio {ratios} {figures} baseline={base} process{'es' if base > 1 else ''}")


if __name__ == "__main__":
    main()
