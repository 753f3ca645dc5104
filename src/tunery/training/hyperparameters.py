"""Resolving "auto" hyperparameters from the data set, as OpenAI's guide describes them, and from
the device: on a CPU "auto" trains several examples per step (packed into one matrix product,
sharing their common beginning: about twice the examples per second of one at a time) with the
learning rate raised with the batch, as the square root of its size."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from tunery.data.render import DEFAULT_PROMPT_LOSS_WEIGHT

TARGET_EPOCHS = 3  # the guide: start from 3 epochs ...
MIN_EPOCHS, MAX_EPOCHS = 1, 25  # ... clamped to this range ...
MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 100, 25_000  # ... so that examples x epochs lands here
MAX_AUTO_BATCH_SIZE = 256
BATCH_FRACTION = 0.002  # OpenAI's auto batch size is about 0.2% of the examples
CPU_AUTO_BATCH_SIZE = 8  # on a CPU: measured fastest per example on SmolLM2 (1: 549 ms, 8: 259 ms, 16: 300 ms)
# Peak learning rate of a REFERENCE_PARAMETERS model, multiplied by learning_rate_multiplier; larger
# models get less, by the square root of their size (a 7B model: 1.4e-4 for LoRA, 7e-6 in full).
BASE_LEARNING_RATE = {"lora": 1e-3, "full": 5e-5}
# DPO moves a model that already answers well by small differences between two answers: far below
# supervised training's rates (TRL's DPO default, 1e-6 in full, is for runs of thousands of steps).
# LoRA on SmolLM2-135M, bench/dpo_quality.py (66 steps, x2.83 for the CPU batch): 2e-5 changed too
# little (37.5% terse answers, fluent), 4e-5 92.5% to 97.5% terse and on topic (5 runs; 85% to 95%
# over 3 runs on data whose non-preferred outputs stopped before a list), 6e-5 85% on that data. On
# the bench's earlier data (whole rambling answers as non-preferred, 41 steps) 5e-6 and 1e-5 changed
# too little (5%, 20%), 2e-5 and more collapsed answers into short replies to nothing
# (bench/terse_data.py says why).
DPO_BASE_LEARNING_RATE = {"lora": 4e-5, "full": 1e-5}
DPO_AUTO_BETA = 0.1  # TRL's default, and the DPO paper's
REFERENCE_PARAMETERS = 135_000_000


@dataclass(frozen=True)
class Resolved:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    training_type: str
    prompt_loss_weight: float = DEFAULT_PROMPT_LOSS_WEIGHT
    parameters: int = REFERENCE_PARAMETERS  # the base model's size (0: unknown, no .safetensors)
    method: str = "supervised"  # or "dpo"
    beta: float | None = None  # DPO's

    @property
    def learning_rate(self) -> float:
        scale = min(1.0, math.sqrt(REFERENCE_PARAMETERS / self.parameters)) if self.parameters else 1.0
        base = DPO_BASE_LEARNING_RATE if self.method == "dpo" else BASE_LEARNING_RATE
        return base[self.training_type] * scale * self.learning_rate_multiplier

    def as_api(self) -> dict[str, Any]:
        """As the job shows them: its method's hyperparameters."""
        shown = {"n_epochs": self.n_epochs, "batch_size": self.batch_size,
                 "learning_rate_multiplier": self.learning_rate_multiplier, "training_type": self.training_type}
        if self.method == "dpo":
            return shown | {"beta": self.beta}
        return shown | {"prompt_loss_weight": self.prompt_loss_weight}


def default_epochs(n_examples: int) -> int:
    epochs = TARGET_EPOCHS
    if n_examples * epochs < MIN_TARGET_EXAMPLES:
        epochs = min(MAX_EPOCHS, math.ceil(MIN_TARGET_EXAMPLES / n_examples))
    elif n_examples * epochs > MAX_TARGET_EXAMPLES:
        epochs = max(MIN_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return epochs


def default_batch_size(n_examples: int, device_type: str = "cuda") -> int:
    if device_type == "cpu":
        return max(1, min(CPU_AUTO_BATCH_SIZE, n_examples))
    return max(1, min(MAX_AUTO_BATCH_SIZE, round(n_examples * BATCH_FRACTION)))


def resolve(requested: dict[str, Any], n_examples: int, parameters: int = REFERENCE_PARAMETERS,
            device_type: str = "cuda") -> Resolved:
    """Numbers for every hyperparameter; "auto" or absent ones from the data set and the device
    type ("cpu" or "cuda") the job trains on."""

    def given(key: str):
        value = requested.get(key)
        return None if value in (None, "auto") else value

    batch_size = given("batch_size") or default_batch_size(n_examples, device_type)
    # A batch chosen for the CPU comes with its learning rate; on a GPU, and for a batch a user
    # chose, the multiplier stays 1 (OpenAI's default).
    paired = device_type == "cpu" and given("batch_size") is None
    return Resolved(
        n_epochs=given("n_epochs") or default_epochs(n_examples),
        batch_size=batch_size,
        learning_rate_multiplier=float(given("learning_rate_multiplier") or (round(math.sqrt(batch_size), 2) if paired else 1.0)),
        training_type=requested.get("training_type") or "lora",
        prompt_loss_weight=DEFAULT_PROMPT_LOSS_WEIGHT if requested.get("prompt_loss_weight") is None
        else float(requested["prompt_loss_weight"]),
        parameters=parameters,
    )


def resolve_dpo(requested: dict[str, Any], n_pairs: int, parameters: int = REFERENCE_PARAMETERS,
                device_type: str = "cuda") -> Resolved:
    """A DPO job's numbers: epochs and batch size as for supervised jobs (counted in pairs), DPO's
    own learning rates, and beta (DPO_AUTO_BETA when "auto")."""
    supervised = resolve({k: v for k, v in requested.items() if k != "beta"}, n_pairs, parameters, device_type)
    beta = requested.get("beta")
    return replace(supervised, method="dpo", beta=DPO_AUTO_BETA if beta in (None, "auto") else float(beta))
