"""How examples/data/terse_{train,valid}.jsonl's pairs were made from the base model's own answers,
as preference data usually is (a model's answers, judged and edited by people): each question
written for tunery is answered by SmolLM2-135M-Instruct through `tunery serve` (greedy, max_tokens
64, cut there); the non-preferred output is that answer, the preferred output its first sentence
alone, what a person asked to make the answer terse would keep. A question whose answer's first
sentence is over 20 words, or is all there is, makes no pair (of 150 + 30 questions, 89 + 20 pairs).
The questions come from examples/data/terse_written_{train,valid}.jsonl, pairs written for tunery
that the first version of the bench trained on (see below).

    python bench/terse_data.py [--max-tokens 64]

Measured why (bench/dpo_quality.py, SmolLM2, auto hyperparameters): with the written pairs (a
correct answer of at most 15 words preferred over the same fact padded with chatty sentences),
whose rambling answer begins with the terse one and goes on ("...protocols.\\n\\nIt grew out
of..."), DPO learned to avoid what the base model never writes and its answers stayed long (5%
terse, validation reward accuracy 100%); with the base model's answers as non-preferred but written
terse answers as preferred, the preferred answers stayed unlikely and the model collapsed into short
nonsense ("You are a helpful AI named SmolLM..."), counted terse."""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dpo_quality import BASE, DATA, load, terse
from server import serve


def first_sentence(answer: str) -> str | None:
    """The answer's first sentence when it is terse and more follows it, else None."""
    match = re.match(r"(.+?[.!?])\s+\S", answer.strip(), re.DOTALL)
    if match is None or not terse(match.group(1)) or len(match.group(1).split()) < 3:
        return None
    return match.group(1)


def base_answers(client, inputs: list[dict], max_tokens: int) -> list[str]:
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
        for name in ("terse_train.jsonl", "terse_valid.jsonl"):
            pairs = load(name.replace("terse_", "terse_written_"))
            answers = base_answers(client, [p["input"] for p in pairs], args.max_tokens)
            made = []
            for pair, answer in zip(pairs, answers):
                if first := first_sentence(answer):
                    made.append({"input": pair["input"], "preferred_output": [{"role": "assistant", "content": first}],
                                 "non_preferred_output": [{"role": "assistant", "content": answer}]})
            (DATA / name).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in made))
            print(f"{name}: {len(made)} pairs of the {len(pairs)} questions (the others' first sentence was too long, "
                  f"or all there was)")


if __name__ == "__main__":
    main()
