"""What a training file will cost before it trains: the epochs "auto" gives it, the tokens billed
(as OpenAI bills: tokens x epochs) and the time on this machine. The time comes from a few real
optimizer steps of the file's recipe (supervised, or DPO for preference pairs) on synthetic examples
of the data set's typical length (tokens per second), dividing the billed tokens."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from tunery.data.stats import TokenStats
from tunery.data.validate import Report
from tunery.training.hyperparameters import default_batch_size, default_epochs

MEASURED_STEPS = 3  # timed optimizer steps, after one untimed warm-up step
MIN_EXAMPLE_TOKENS = 16
TOKENS_BUCKET = 32  # example lengths measured alike: a measurement serves every file within the bucket
_measuring = threading.Lock()  # one measurement at a time: two would slow each other down


@dataclass
class TrainingEstimate:
    n_epochs: int  # what "auto" resolves to for this many examples
    billed_tokens: int  # tokens x epochs, as OpenAI bills
    estimated_seconds: float | None = None  # training time on this machine, when measured

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FileCheck:
    """A training file checked against a base model: its report, token statistics and cost."""
    report: Report
    stats: TokenStats
    cost: TrainingEstimate

    def as_dict(self, model: str) -> dict[str, Any]:
        """What `tunery validate --json` prints and the console's file check returns."""
        return self.report.as_dict() | {"model": model, "stats": self.stats.as_dict() | self.cost.as_dict()}


def estimate_training(stats: TokenStats, base_model: str | None = None, *, device: str = "auto") -> TrainingEstimate:
    """The auto epochs and billed tokens of a checked file; with base_model (a model folder), the
    training time too, measured here with the auto batch size (once per model, batch size and
    length bucket in a process)."""
    epochs = default_epochs(stats.examples) if stats.examples else 0
    result = TrainingEstimate(n_epochs=epochs, billed_tokens=stats.tokens * epochs)
    if base_model is not None and stats.examples:
        bucket = max(1, round(stats.tokens_per_example.mean / TOKENS_BUCKET)) * TOKENS_BUCKET
        preference = stats.preferred_tokens_per_example is not None
        with _measuring:
            from tunery.devices import resolve_device

            batch_size = default_batch_size(stats.examples, resolve_device(device).type)
            speed = _measured(base_model, bucket, batch_size, device, preference)
        seconds = result.billed_tokens / speed
        if preference:
            # DPO's reference pass before the first step: one forward of each pair, about half of what
            # a LoRA step costs it (measured on SmolLM2, terse_train.jsonl: 56 s against 108 s of an
            # epoch's steps; the backward computes no gradient for the frozen weights).
            seconds += stats.tokens / speed / 2
        result.estimated_seconds = round(seconds, 1)
    return result


@functools.lru_cache(maxsize=64)
def _measured(base_model: str, example_tokens: int, batch_size: int, device: str, preference: bool) -> float:
    return measure_tokens_per_second(base_model, example_tokens=example_tokens, batch_size=batch_size, device=device,
                                     preference=preference)


def measure_tokens_per_second(base_model: str, *, example_tokens: int, batch_size: int,
                              training_type: str = "lora", device: str = "auto", preference: bool = False) -> float:
    """Training throughput of the real recipe on examples of about example_tokens tokens; with
    preference, DPO's on pairs of that many tokens in all (the input counted in both sequences, as
    billed, though its recipe reads it once)."""
    from tunery.training.dpo import DPOConfig, DPORecipe
    from tunery.training.sft import SFTConfig, SFTRecipe

    size = max(MIN_EXAMPLE_TOKENS, example_tokens)
    if preference:  # two sequences, each an input and an output
        words = " word" * (size // 4)
        example = {"input": {"messages": [{"role": "user", "content": words}]},
                   "preferred_output": [{"role": "assistant", "content": words}],
                   "non_preferred_output": [{"role": "assistant", "content": words + " more"}]}
        recipe_type, config_type, count = DPORecipe, DPOConfig, lambda pair: pair.tokens
    else:
        example = {"prompt": " word" * (size // 2), "completion": " word" * (size // 2)}
        recipe_type, config_type, count = SFTRecipe, SFTConfig, lambda rendered: len(rendered.input_ids)
    recipe = recipe_type(config_type(base_model=base_model, n_epochs=1, batch_size=batch_size, learning_rate=1e-5,
                                     training_type=training_type, device=device))
    recipe.setup([example] * batch_size * (MEASURED_STEPS + 1))
    started: list[float] = []
    tokens = 0

    def on_step(metrics) -> bool:
        nonlocal tokens
        if metrics.step == 1:  # the first step pays for lazy initialisation (DPO: and its reference pass): not timed
            started.append(time.perf_counter())
        else:
            tokens += sum(map(count, recipe.examples[:batch_size]))
        return True

    try:
        recipe.train(on_step)
    finally:
        recipe.cleanup()
    return tokens / (time.perf_counter() - started[0])
