"""Eval runs' speed (issue 17, point 6): a `completions` eval run of N items on SmolLM2-135M-Instruct
(the worker submits a batch's chat requests to the engine at once, which decodes them together)
against the baseline of the same items asked one chat request at a time through the SDK, as a
user's own loop would. Both greedy, the same max tokens, on the same server; items per second of
each and their ratio (goal: at least 3x).

    python bench/evals.py [--items 200] [--max-tokens 32] [--baseline-items 40]

The baseline's items per second is measured on its first --baseline-items items (a loop's speed
does not change with its length) to keep the bench short; the run's time is from its creation to
its completion, queueing and the worker's first model load included (a warm-up run goes first).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from server import serve

REPO = Path(__file__).resolve().parents[1]
MODEL = "SmolLM2-135M-Instruct"
EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}


def items(count: int) -> list[dict]:
    """The orders test set's questions, repeated to `count` items."""
    rows = [json.loads(line) for line in (REPO / "examples" / "data" / "orders_test.jsonl").read_text().splitlines()
            if line.strip()]
    found = [{"messages": r["messages"][:-1], "answer": r["messages"][-1]["content"]} for r in rows]
    return [found[i % len(found)] for i in range(count)]


def run_seconds(client, eval_id: str, tests: list[dict], max_tokens: int) -> float:
    started = time.perf_counter()
    run = client.evals.runs.create(eval_id, data_source={
        "type": "completions", "model": MODEL, "sampling_params": {"temperature": 0, "max_completion_tokens": max_tokens},
        "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
        "source": {"type": "file_content", "content": [{"item": item} for item in tests]}})
    while (run := client.evals.runs.retrieve(run.id, eval_id=eval_id)).status not in ("completed", "failed", "canceled"):
        time.sleep(0.2)
    if run.status != "completed" or run.result_counts.errored:
        raise RuntimeError(f"run {run.id} {run.status}: {run.error} {run.result_counts}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--baseline-items", type=int, default=40)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="tunery-evals-bench-")) / "data"
    with serve(data_dir) as client:
        evaluation = client.evals.create(name="bench", testing_criteria=[EXACT], data_source_config={
            "type": "custom", "item_schema": {"type": "object"}, "include_sample_schema": True})
        run_seconds(client, evaluation.id, items(4), args.max_tokens)  # the worker loads the model
        batched = run_seconds(client, evaluation.id, items(args.items), args.max_tokens)
        tests = items(args.baseline_items)
        client.chat.completions.create(model=MODEL, messages=tests[0]["messages"], max_tokens=1)  # the API's engine
        started = time.perf_counter()
        for item in tests:
            client.chat.completions.create(model=MODEL, messages=item["messages"], temperature=0,
                                           max_tokens=args.max_tokens)
        single = time.perf_counter() - started
    run_rate, loop_rate = args.items / batched, len(tests) / single
    print(f"eval run: {args.items} items in {batched:.1f} s = {run_rate:.2f} items/s; one chat request at a time: "
          f"{len(tests)} items in {single:.1f} s = {loop_rate:.2f} items/s")
    ratio = run_rate / loop_rate
    print(f"evals_items_per_s={run_rate:.2f} single_items_per_s={loop_rate:.2f} ratio={ratio:.2f} "
          f"goal ratio>=3:{'met' if ratio >= 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
