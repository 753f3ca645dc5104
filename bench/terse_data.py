"""How examples/data/terse_{train,valid}.jsonl's pairs were made from the base model's own answers,
as preference data usually is (a model's answers, judged and edited by people): each question
written for tunery is answered greedily by SmolLM2-135M-Instruct through `tunery serve` (max_tokens
64, cut there).

- The preferred output is where a person asked to make that answer terse would cut it
  (`terse_prefix`): its first sentence when that has 3 to MAX_PREFERRED_WORDS words and more
  follows; otherwise the shortest beginning of the first sentence that stops before a clause
  ("that", "which", "who", "where"; ", but", ", with", ", and") and has 3 to MAX_PREFERRED_WORDS
  words, with a full stop. A question whose answer is terse already, or cannot be cut so, makes
  no pair (of 150 + 30 questions, 93 + 21 pairs).
- The non-preferred output is the same answer's first two sentences as written (`rambling`): it
  goes on where the terse one stops. When the answer turns into a list after a colon ("Here's
  how:", a line break, "1. ..."), the list's first line is kept: how-to answers going on into
  lists were the misses while the cut stopped at the colon.
- MISMATCHED of the training questions also get a pair whose non-preferred output is another
  training question's preferred output (seeded): terse but not an answer to this question. The
  validation file holds only the style's pairs (a question's own answer against another's is not
  a style to generalize to new questions: its reward accuracy on them stays near chance).

    python bench/terse_data.py [--max-tokens 64]

The questions come from examples/data/terse_written_{train,valid}.jsonl, pairs written for tunery
that the first version of the bench trained on. Answers of a batch depend on how the engine batches
concurrent requests: a new run does not give the same answers byte for byte.

Measured why (bench/dpo_quality.py, SmolLM2, 40 held-out questions, share of greedy answers terse
and on topic): written terse answers preferred over written rambling ones, 5% (DPO learned to avoid
what the base model never writes); the base model's whole greedy answer as non-preferred, with the
shortest first sentence of five answers (or of the greedy one, or a cut of it, as above) preferred:
55% to 77.5%, every run's misses the same collapse into short replies to nothing ("SHEEP!", "Oh no,
no no no...", "You're a helpful AI...", the default system message), worse with more optimization,
and the same with LoRA rank 4 or 8, LoRA on attention only, beta 0.5, or 60 more questions. The
summed log-probability of a long non-preferred answer is pushed down most cheaply by making every
answer less likely, the on-topic ones first. Pairs preferring the question's terse answer over
another question's (same length, so that shortness cannot win them) stopped the collapse: 75-82.5%,
the misses now numbered lists ("1. 1. 1. 2. 3.") on how-to questions, their first token "1" risen
from 0.02 to 0.57 (the lists of the whole answers pushed down). With the non-preferred output cut
to two sentences, fluent and on-topic answers at the learning rate of the longer pairs (37.5% terse)
and 85% to 95% over three runs at twice that rate, the auto rate since (hyperparameters.py), the
misses how-to answers going on into lists after the colon where the non-preferred output stopped.
Keeping the list's first line in the non-preferred output (15 of the 114 style pairs changed):
95%, 92.5%, 97.5% and 95% with seeds 1 to 4 (the earlier cut with seed 1: 92.5%), 97.5% without
a seed."""

from __future__ import annotations

import argparse
import json
import random
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dpo_quality import BASE, DATA, load, terse
from server import serve

MAX_PREFERRED_WORDS = 15
MIN_PREFERRED_WORDS = 3
MISMATCHED = 80  # training questions that also get a pair against another question's terse answer
SEED = 0
CLAUSE = re.compile(r",?\s(?:that|which|who|where)\b|,\s(?:but|with|and)\s")


def short_enough(text: str) -> bool:
    return terse(text) and MIN_PREFERRED_WORDS <= len(text.split()) <= MAX_PREFERRED_WORDS


def terse_prefix(answer: str) -> str | None:
    """Where a person would cut the answer to make it terse (the module's docstring), or None."""
    text = answer.strip()
    match = re.match(r"(.+?[.!?])\s+\S", text, re.DOTALL)
    if match and short_enough(match.group(1)):
        return match.group(1)
    sentence = match.group(1) if match else text
    cuts = (sentence[:clause.start()].rstrip(".!?") + "." for clause in CLAUSE.finditer(sentence))
    return next(filter(short_enough, cuts), None)


def rambling(answer: str, preferred: str) -> str:
    """The answer's first two sentences as written (three when the second adds at most two words to
    the preferred output). A colon before a line break ends a sentence too (a list's heading, not
    "four parts: a, b"), and a sentence ending so goes on through the next line: the list the
    answer turns into begins in the non-preferred output."""
    text = answer.strip()
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)|:(?=\s*\n)", text)] + [len(text)]
    cut = ends[min(1, len(ends) - 1)]
    if len(text[:cut].split()) <= len(preferred.split()) + 2:
        cut = ends[min(2, len(ends) - 1)]
    if text[:cut].endswith(":"):
        cut += re.match(r"\s*[^\n]*", text[cut:]).end()
    return text[:cut].rstrip()


def style_pairs(inputs: list[dict], greedy: list[str]) -> list[dict]:
    """The preferred (terse) against the non-preferred (rambling) output of each answer that is not terse already."""
    pairs = []
    for given, answer in zip(inputs, greedy):
        preferred = None if terse(answer.strip()) else terse_prefix(answer)
        if preferred is not None:
            pairs.append({"input": given, "preferred_output": [{"role": "assistant", "content": preferred}],
                          "non_preferred_output": [{"role": "assistant", "content": rambling(answer, preferred)}]})
    return pairs


def with_mismatched(pairs: list[dict], count: int, seed: int = SEED) -> list[dict]:
    """The pairs and `count` more, each a question's preferred output against another question's, shuffled."""
    rng = random.Random(seed)
    extra = []
    for i in rng.sample(range(len(pairs)), count):
        other = rng.choice([j for j in range(len(pairs)) if j != i])
        extra.append({**pairs[i], "non_preferred_output": pairs[other]["preferred_output"]})
    mixed = pairs + extra
    rng.shuffle(mixed)
    return mixed


def greedy_answers(client, inputs: list[dict], max_tokens: int) -> list[str]:
    def ask(given: dict) -> str:
        return client.chat.completions.create(model=BASE, messages=given["messages"], temperature=0,
                                              max_tokens=max_tokens).choices[0].message.content
    with ThreadPoolExecutor(8) as pool:  # the engine batches concurrent requests
        return list(pool.map(ask, inputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64, help="the base model's answers are cut there")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="tunery-terse-data-")) / "data"
    with serve(data_dir) as client:
        for name, mismatched in (("terse_train.jsonl", MISMATCHED), ("terse_valid.jsonl", 0)):
            inputs = [p["input"] for p in load(name.replace("terse_", "terse_written_"))]
            pairs = style_pairs(inputs, greedy_answers(client, inputs, args.max_tokens))
            made = with_mismatched(pairs, min(mismatched, len(pairs))) if mismatched else pairs
            (DATA / name).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in made))
            print(f"{name}: {len(pairs)} pairs of the {len(inputs)} questions (the others' answers were terse "
                  f"already, or could not be cut), {len(made) - len(pairs)} more against another question's answer")


if __name__ == "__main__":
    main()
