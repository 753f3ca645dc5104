"""How examples/data/terse_{train,valid}.jsonl's pairs were made from the base model's own answers,
as preference data usually is (a model's answers, judged and edited by people): each question
written for tunery is answered by SmolLM2-135M-Instruct through `tunery serve`, once greedily and
SAMPLES times sampled (temperature 0.8, seed 1; max_tokens 64, cut there). The non-preferred output
is the greedy answer (what the model says by default); the preferred output the shortest first
sentence, among the greedy and sampled answers, of 3 to MAX_PREFERRED_WORDS words after which the
answer went on: what a person asked to make the answer terse would keep. A question whose greedy
answer is terse already, or none of whose answers begins with such a sentence, makes no pair (of
150 + 30 questions, 110 + 23 pairs). The questions come from
examples/data/terse_written_{train,valid}.jsonl, pairs written for tunery that the first version
of the bench trained on (see below).

    python bench/terse_data.py [--max-tokens 64]

Measured why (bench/dpo_quality.py, SmolLM2, auto hyperparameters): with the written pairs (a
correct answer of at most 15 words preferred over the same fact padded with chatty sentences),
whose rambling answer begins with the terse one and goes on ("...protocols.\\n\\nIt grew out
of..."), DPO learned to avoid what the base model never writes and its answers stayed long (5%
terse, validation reward accuracy 100%); with the base model's answers as non-preferred but written
terse answers as preferred, the preferred answers stayed unlikely and the model collapsed into short
nonsense ("You are a helpful AI named SmolLM..."), counted terse. With the greedy answer's own first
sentence when it had at most 20 words (89 + 20 pairs): 72.5% terse, the misses single sentences of
21 to 35 words; the shortest of five answers' first sentences, at most 15 words (10 on average):
77.5% terse and on topic, validation reward accuracy 100%, the misses short off-topic replies."""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dpo_quality import BASE, DATA, load, terse
from server import serve


MAX_PREFERRED_WORDS = 15
SAMPLES = 4


def first_sentence(answer: str) -> str | None:
    """The answer's first sentence when it is terse, 3 to MAX_PREFERRED_WORDS words, and more follows it; else None."""
    match = re.match(r"(.+?[.!?])\s+\S", answer.strip(), re.DOTALL)
    if match is None or not terse(match.group(1)) or not 3 <= len(match.group(1).split()) <= MAX_PREFERRED_WORDS:
        return None
    return match.group(1)


def base_answers(client, inputs: list[dict], max_tokens: int) -> list[tuple[str, list[str]]]:
    """Each input's greedy answer and SAMPLES sampled ones."""
    def ask(given: dict) -> tuple[str, list[str]]:
        greedy = client.chat.completions.create(model=BASE, messages=given["messages"], temperature=0,
                                                max_tokens=max_tokens).choices[0].message.content
        sampled = client.chat.completions.create(model=BASE, messages=given["messages"], temperature=0.8, n=SAMPLES,
                                                 seed=1, max_tokens=max_tokens).choices
        return greedy, [choice.message.content for choice in sampled]
    with ThreadPoolExecutor(8) as pool:  # the engine batches concurrent requests
        return list(pool.map(ask, inputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=64, help="the base model's answers are cut there")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="tunery-terse-data-")) / "data"
    with serve(data_dir) as client:
        for name in ("terse_train.jsonl", "terse_valid.jsonl"):
            pairs = load(name.replace("terse_", "terse_written_"))
            answers = base_answers(client, [p["input"] for p in pairs], args.max_tokens)
            made = []
            for pair, (greedy, sampled) in zip(pairs, answers):
                firsts = [first for first in map(first_sentence, [greedy, *sampled]) if first]
                if terse(greedy.strip()) or not firsts:
                    continue
                shortest = min(firsts, key=lambda first: len(first.split()))
                made.append({"input": pair["input"], "preferred_output": [{"role": "assistant", "content": shortest}],
                             "non_preferred_output": [{"role": "assistant", "content": greedy}]})
            (DATA / name).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in made))
            print(f"{name}: {len(made)} pairs of the {len(pairs)} questions (the others' answers were terse already, "
                  f"or began with no short enough sentence)")


if __name__ == "__main__":
    main()
