"""Quality with every hyperparameter on "auto": SmolLM2-135M-Instruct fine-tuned through the API
on orders_train.jsonl (sentence -> JSON, chat) and tickets_train.jsonl (ticket -> class,
prompt/completion), scored on the held-out test sets beside the base model.

    python bench/quality.py [--data-dir DIR] [--rescore]

--rescore scores the models the last run left in DIR again without training (to compare serving
settings on the same models, e.g. TUNERY_GGUF_TYPE=q4_0 or TUNERY_CPU_BACKEND=torch).

Orders: exact match of the parsed JSON answer (chat, temperature 0). Tickets: the class from a
one-token answer (/v1/completions, max_tokens=1, temperature 0), as the legacy guide's
classifier recipe does. Then the guide's Marv walkthrough (examples/marv_walkthrough.py), timed
from upload to the first fine-tuned answer. The last line says whether each goal is met, on a
2-core CPU: orders at least 95% exact with its job under 90 s, tickets 100%, Marv under 45 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from server import serve, wait_for

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))
from marv_walkthrough import MARV_FILE, run as marv_walkthrough  # noqa: E402  (the guide's script, run as it is)

DATA = REPO / "examples" / "data"
BASE = "SmolLM2-135M-Instruct"


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def orders_score(client, model: str, tests: list[dict]) -> float:
    right = 0
    for example in tests:
        answer = client.chat.completions.create(model=model, messages=example["messages"][:-1], temperature=0,
                                                max_tokens=64).choices[0].message.content
        try:
            right += json.loads(answer) == json.loads(example["messages"][-1]["content"])
        except json.JSONDecodeError:
            pass
    return right / len(tests)


def tickets_score(client, model: str, tests: list[dict]) -> float:
    answers = client.completions.create(model=model, prompt=[e["prompt"] for e in tests], max_tokens=1, temperature=0)
    by_index = {c.index: c.text for c in answers.choices}
    return sum(by_index[i].strip() == e["completion"].strip() for i, e in enumerate(tests)) / len(tests)


def fine_tune(client, train_file: str) -> tuple[str, float, dict]:
    file = client.files.create(file=open(DATA / train_file, "rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=file.id, model=BASE)  # every hyperparameter "auto"
    job = wait_for(client, job.id)
    return job.fine_tuned_model, job.finished_at - job.created_at, job.hyperparameters.model_dump()


def last_fine_tune(client, train_file: str) -> tuple[str, float, dict]:
    """The newest succeeded job of the data directory that trained on train_file."""
    for job in client.fine_tuning.jobs.list(limit=100):
        if job.status == "succeeded" and client.files.retrieve(job.training_file).filename == train_file:
            return job.fine_tuned_model, job.finished_at - job.created_at, job.hyperparameters.model_dump()
    raise SystemExit(f"--rescore: no succeeded job trained on {train_file} in this data directory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="tunery's data directory [default: a fresh temporary one]")
    parser.add_argument("--rescore", action="store_true", help="score the models a previous run left in --data-dir")
    args = parser.parse_args()
    if args.rescore and not args.data_dir:
        parser.error("--rescore needs the --data-dir of a previous run")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tunery-quality-")) / "data"
    rows = []
    with serve(data_dir) as client:
        for name, train, test, score in (("orders (exact JSON)", "orders_train.jsonl", "orders_test.jsonl", orders_score),
                                         ("tickets (accuracy)", "tickets_train.jsonl", "tickets_test.jsonl", tickets_score)):
            tests = load(test)
            base = score(client, BASE, tests)
            started = time.time()
            model, job_seconds, hyperparameters = (last_fine_tune if args.rescore else fine_tune)(client, train)
            tuned = score(client, model, tests)
            rows.append((name, base, tuned, job_seconds, time.time() - started, hyperparameters))
        marv = None if args.rescore else marv_walkthrough(client, str(MARV_FILE))
    print(f"{'task':<22} {'base':>6} {'tuned':>6} {'job s':>6} {'to score s':>10}  resolved hyperparameters")
    for name, base, tuned, job_seconds, total, hp in rows:
        shown = {k: hp[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier") if k in hp}
        print(f"{name:<22} {base:6.1%} {tuned:6.1%} {job_seconds:6.0f} {total:10.0f}  {shown}")
    if marv is not None:
        print(f"Marv walkthrough: upload to first fine-tuned answer {marv['seconds']:.1f} s "
              f"({marv['job'].hyperparameters.batch_size} a batch): {marv['completion'].choices[0].message.content!r}")
    print(" ".join(f"{name.split()[0]}={tuned:.3f} {name.split()[0]}_base={base:.3f} {name.split()[0]}_job_s={job_s:.0f}"
                   for name, base, tuned, job_s, _, _ in rows))
    (_, _, orders, orders_s, _, _), (_, _, tickets, _, _, _) = rows
    goals = {"orders>=0.95": orders >= 0.95, "orders_job<90s": orders_s < 90, "tickets=1.00": tickets == 1.0}
    if marv is not None:
        goals["marv<45s"] = marv["seconds"] < 45
    print("goals " + " ".join(f"{goal}:{'met' if met else 'MISSED'}" for goal, met in goals.items()))


if __name__ == "__main__":
    main()
