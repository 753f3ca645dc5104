"""DPO with every hyperparameter on "auto": SmolLM2-135M-Instruct trained through the API on
preference pairs that prefer a terse answer over a rambling one, scored on held-out prompts
beside the base model.

    python bench/dpo_quality.py [--data-dir DIR] [--hyperparameters JSON] [--seed N]

The data, examples/data/terse_{train,valid,test}.jsonl, was made for tunery and is under the
repository's licence: 180 general-knowledge and how-to questions, split 150 to train and 30 to
validate, and 40 further questions in neither, the held-out test prompts. Each pair prefers the
base model's own greedy answer cut where a terse answer stops (its first sentence, or the first
sentence's beginning before a clause, at most 15 words) over the same answer's first two
sentences (with the first line of a list it turns into); 80 more training pairs prefer it over
another question's terse answer (93 + 80 pairs to train, 21 to validate; bench/terse_data.py made
them, and says why). No system message asks for brevity: the style has to be learned from the
preferences. The job draws its own seed unless --seed gives one.

The job is created with method {"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto"}}} and
the validation file, everything else on "auto". Each test prompt is answered greedily
(temperature 0, max_tokens 80, enough to see rambling) and counts as terse by TERSE_RULE below.
The validation reward accuracy is the last one the job's metrics events report, on the whole
validation set (full_valid_reward_accuracy, at each epoch's end) where there is one, else on a
validation mini-batch (valid_reward_accuracy). A DPO answer counts only if it is also on topic:
it shares a content word with the question or with the base model's answer (`on_topic`), so that
a model collapsed into one short reply to everything is not counted as terse. The last line says
whether the goals are met on a 2-core CPU: base at most 20% terse, DPO at least 90%, validation
reward accuracy at least 95%, the job under 10 minutes from creation to success.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
from server import serve

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"
BASE = "SmolLM2-135M-Instruct"
MAX_WORDS = 20
MAX_TOKENS = 80
TERSE_RULE = (f"terse = at most {MAX_WORDS} words, one sentence (no '.', '!' or '?' followed by more text) "
              f"and one line (greedy answer, max_tokens={MAX_TOKENS})")
GOALS = "base <= 20%, dpo >= 90%, valid reward accuracy >= 95%, job < 10 minutes"


def terse(answer: str) -> bool:
    text = answer.strip()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    return bool(text) and len(text.split()) <= MAX_WORDS and len(sentences) == 1 and "\n" not in text


# Words too common to show what an answer is about.
COMMON = set("what which when where does that this with from have there their they them your about into "
             "would could should made make many much most more some than then these those were been being "
             "also only very just like such each other because".split())


def content_words(text: str) -> set[str]:
    """Words of four letters or more that are not common, a plural's "s" dropped ("atoms" is "atom"), and numbers."""
    words = {w[:-1] if w.endswith("s") and not w.endswith("ss") else w
             for w in re.findall(r"[a-z]{4,}", text.lower()) if w not in COMMON}
    return words | set(re.findall(r"\d+", text))


def on_topic(question: str, base_answer: str, answer: str) -> bool:
    """Whether the answer shares a content word (`content_words`) with the question or with the base
    model's answer to it: a model that collapsed into one reply to everything
    ("You are a helpful AI...") is terse but not answering."""
    return bool(content_words(answer) & (content_words(question) | content_words(base_answer)))


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def answers(client, model: str, tests: list[dict]) -> list[str]:
    def ask(example: dict) -> str:
        return client.chat.completions.create(model=model, messages=example["messages"], temperature=0,
                                              max_tokens=MAX_TOKENS).choices[0].message.content
    with ThreadPoolExecutor(8) as pool:  # the engine batches concurrent requests
        return list(pool.map(ask, tests))


def share(replies: list[str]) -> float:
    return sum(map(terse, replies)) / len(replies)


def follow(client, job_id: str, timeout: float = 3600):
    """Polls the job, printing its events as they come; returns the finished job and all its events, oldest first."""
    seen: set[str] = set()
    deadline = time.time() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        new = [e for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data if e.id not in seen]
        for event in reversed(new):
            seen.add(event.id)
            print(f"  [{time.strftime('%H:%M:%S', time.localtime(event.created_at))}] {event.message}", flush=True)
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        if time.time() > deadline:
            raise TimeoutError(f"{job_id} still {job.status} after {timeout:.0f} s")
        time.sleep(2)
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=100))  # every page, newest first
    return job, events[::-1]


def reward_accuracy(events) -> tuple[float | None, str]:
    """The last validation reward accuracy the metrics events report: whole set first, else a mini-batch."""
    metrics = [e.data for e in events if e.type == "metrics" and isinstance(e.data, dict)]
    for key in ("full_valid_reward_accuracy", "valid_reward_accuracy"):
        values = [m[key] for m in metrics if m.get(key) is not None]
        if values:
            return float(values[-1]), key
    return None, "none reported"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="tunery's data directory [default: a fresh temporary one]")
    parser.add_argument("--hyperparameters", type=json.loads, default={"beta": "auto"}, metavar="JSON",
                        help='the DPO method\'s hyperparameters, to explore (e.g. \'{"beta": 0.3, "n_epochs": 2}\'); '
                             'the goals are for all on "auto", the default')
    parser.add_argument("--seed", type=int, help="the job's seed, to compare data or settings on the same draws "
                        "[default: none, the job draws its own]")
    args = parser.parse_args()
    on_auto = all(value == "auto" for value in args.hyperparameters.values())
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tunery-dpo-quality-")) / "data"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    tests = load("terse_test.jsonl")
    print(f"style rule: {TERSE_RULE}")
    with serve(data_dir) as client:
        train = client.files.create(file=open(DATA / "terse_train.jsonl", "rb"), purpose="fine-tune")
        valid = client.files.create(file=open(DATA / "terse_valid.jsonl", "rb"), purpose="fine-tune")
        started = time.time()
        before = answers(client, BASE, tests)
        base = share(before)
        print(f"base model {BASE}: {base:.1%} of {len(tests)} held-out answers terse ({time.time() - started:.0f} s)",
              flush=True)
        try:
            method = {"type": "dpo", "dpo": {"hyperparameters": args.hyperparameters}}
            job = client.fine_tuning.jobs.create(training_file=train.id, validation_file=valid.id, model=BASE,
                                                 method=method, seed=args.seed)
        except openai.APIStatusError as error:
            print(f"the DPO job was refused: {error.status_code} {error.message}", file=sys.stderr)
            sys.exit(1)
        print(f"job {job.id} created; following it", flush=True)
        job, events = follow(client, job.id)
        if job.status != "succeeded":
            error = job.error.model_dump() if job.error else None
            print(f"job {job.id} {job.status}: {error}", file=sys.stderr)
            sys.exit(1)
        minutes = (job.finished_at - job.created_at) / 60
        print(f"resolved method: {json.dumps(job.method.model_dump(exclude_none=True) if job.method else None)}")
        print(f"job time: {minutes:.1f} minutes from creation to success; model {job.fine_tuned_model}")
        after = answers(client, job.fine_tuned_model, tests)
    accuracy, source = reward_accuracy(events)
    print("\nexamples (base answers cut at 100 characters):")
    for example, old, new in list(zip(tests, before, after))[:5]:
        shown = json.dumps(old[:100]) + ("..." if len(old) > 100 else "")
        print(f"  {example['messages'][-1]['content']}")
        print(f"    base: {shown} [{'terse' if terse(old) else 'not terse'}]")
        print(f"    dpo:  {json.dumps(new)} [{'terse' if terse(new) else 'not terse'}]")
    questions = [example["messages"][-1]["content"] for example in tests]
    topical = [on_topic(q, old, new) for q, old, new in zip(questions, before, after)]
    missed = [(q, new, fits) for q, new, fits in zip(questions, after, topical) if not (terse(new) and fits)]
    if missed:
        print(f"\nthe DPO model's {len(missed)} answers that are not terse, or not on topic:")
        for question, new, fits in missed:
            print(f"  {question}\n    dpo:  {json.dumps(new)}{'' if fits else ' [off topic]'}")
    dpo = sum(terse(new) and fits for new, fits in zip(after, topical)) / len(tests)
    print(f"\nterse answers to {len(tests)} held-out prompts: base {base:.1%}, dpo {dpo:.1%} (and on topic)")
    print("validation reward accuracy at the end: "
          + (f"{accuracy:.1%} ({source})" if accuracy is not None else "none reported by the job's metrics events"))
    met = on_auto and (base <= 0.20 and dpo >= 0.90 and accuracy is not None and accuracy >= 0.95 and minutes < 10)
    print(f"goals: {GOALS}")
    shown = f"{accuracy * 100:.0f}%" if accuracy is not None else "n/a"
    print(f"dpo_quality base={base * 100:.0f}% dpo={dpo * 100:.0f}% valid_reward_accuracy={shown} "
          f"minutes={minutes:.1f} goal={'met' if met else 'not met' if on_auto else 'n/a (not all on auto)'}")


if __name__ == "__main__":
    main()
