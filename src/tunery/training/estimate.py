"""How long training will take on this machine: a few real optimizer steps of the recipe on
synthetic examples of the data set's typical length give tokens per second, and the billed
tokens divided by that give the estimate."""

from __future__ import annotations

import time

from tunery.training.sft import SFTConfig, SFTRecipe

MEASURED_STEPS = 3  # timed optimizer steps, after one untimed warm-up step
MIN_EXAMPLE_TOKENS = 16


def measure_tokens_per_second(base_model: str, *, example_tokens: int, batch_size: int,
                              training_type: str = "lora", device: str = "auto") -> float:
    """Training throughput of the real recipe on examples of about example_tokens tokens."""
    half = max(MIN_EXAMPLE_TOKENS, example_tokens) // 2
    examples = [{"prompt": " word" * half, "completion": " word" * half}] * batch_size * (MEASURED_STEPS + 1)
    recipe = SFTRecipe(SFTConfig(base_model=base_model, n_epochs=1, batch_size=batch_size, learning_rate=1e-5,
                                 training_type=training_type, device=device))
    recipe.setup(examples)
    started: list[float] = []
    tokens = 0

    def on_step(metrics) -> bool:
        nonlocal tokens
        if metrics.step == 1:  # the first step pays for lazy initialisation: not timed
            started.append(time.perf_counter())
        else:
            tokens += sum(len(e.input_ids) for e in recipe.examples[:batch_size])
        return True

    try:
        recipe.train(on_step)
    finally:
        recipe.cleanup()
    return tokens / (time.perf_counter() - started[0])


def estimate_seconds(billed_tokens: int, tokens_per_second: float) -> float:
    return billed_tokens / tokens_per_second
