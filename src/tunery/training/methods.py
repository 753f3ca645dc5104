"""Training methods, one entry each in METHODS: what a job's `method.type` trains with. The worker
runs every method the same way (validate, train with events and checkpoints, publish); what
differs is here: the file formats a method trains on, how its "auto" hyperparameters resolve,
the recipe it builds and its result file. A new method is a recipe and an entry.

Importing this module loads no torch: recipes are imported when a job builds one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tunery.data.formats import FORMAT_NAMES
from tunery.training.hyperparameters import Resolved, resolve, resolve_dpo
from tunery.training.results import dpo_results_csv, results_csv
from tunery.weights import Weights


class Metrics(Protocol):
    step: int
    total_steps: int
    epoch: int
    train_loss: float

    def as_data(self) -> dict[str, Any]: ...

    def message(self) -> str: ...  # the step's event message


class Result(Protocol):
    trained_tokens: int
    stopped: bool  # on_step asked to stop before the end
    history: list  # every step's metrics


class Recipe(Protocol):
    """A training recipe, read top to bottom: setup, train (reporting each step and epoch end;
    on_step returns False to stop, keep_going before the first step), save_checkpoint (weights, state to resume from, manifest
    last), cleanup."""

    def setup(self, examples: list[dict[str, Any]], valid_examples: list[dict[str, Any]] | None = None) -> None: ...

    def train(self, on_step: Callable[[Metrics], bool], on_epoch_end: Callable[[Metrics], None] | None = None,
              keep_going: Callable[[], bool] | None = None) -> Result: ...

    def save_checkpoint(self, folder: Path, metrics: Metrics) -> None: ...

    def cleanup(self) -> None: ...


@dataclass(frozen=True)
class RecipeInputs:
    """A job's training, resolved: what any recipe is built from."""
    start: Weights  # the model training starts from (a base model, or a fine-tune to continue)
    hyperparameters: Resolved
    seed: int
    device: str  # TUNERY_DEVICE
    attention: str  # TUNERY_ATTENTION
    resume_from: Path | None  # a checkpoint with trainer state to go on from


@dataclass(frozen=True)
class TrainingMethod:
    formats: tuple[str, ...]  # the training-file formats it trains on (data.formats' names)
    resolve: Callable[[dict[str, Any], int, int, str], Resolved]  # (requested, examples, parameters, device type)
    build: Callable[[RecipeInputs], Recipe]
    results_csv: Callable[[list, dict[int, dict[str, Any]]], bytes]  # (history, extra columns by step) -> CSV


def _supervised(inputs: RecipeInputs) -> Recipe:
    from tunery.training.sft import SFTConfig, SFTRecipe

    hp = inputs.hyperparameters
    return SFTRecipe(SFTConfig(
        base_model=str(inputs.start.folder), init_adapter=str(inputs.start.adapter) if inputs.start.adapter else None,
        n_epochs=hp.n_epochs, batch_size=hp.batch_size, learning_rate=hp.learning_rate, training_type=hp.training_type,
        seed=inputs.seed, prompt_loss_weight=hp.prompt_loss_weight, device=inputs.device,
        attention=inputs.attention,
        resume_from=str(inputs.resume_from) if inputs.resume_from else None,
    ))


def _dpo(inputs: RecipeInputs) -> Recipe:
    from tunery.training.dpo import DPOConfig, DPORecipe

    hp = inputs.hyperparameters
    return DPORecipe(DPOConfig(
        base_model=str(inputs.start.folder), init_adapter=str(inputs.start.adapter) if inputs.start.adapter else None,
        n_epochs=hp.n_epochs, batch_size=hp.batch_size, learning_rate=hp.learning_rate, training_type=hp.training_type,
        seed=inputs.seed, beta=hp.beta, device=inputs.device, attention=inputs.attention,
        resume_from=str(inputs.resume_from) if inputs.resume_from else None,
    ))


METHODS: dict[str, TrainingMethod] = {
    "supervised": TrainingMethod(formats=("chat", "prompt_completion"), resolve=resolve, build=_supervised,
                                 results_csv=results_csv),
    "dpo": TrainingMethod(formats=("preference",), resolve=resolve_dpo, build=_dpo, results_csv=dpo_results_csv),
}


WRONG_FORMAT = "format_not_for_method"  # the problem code of a file a method cannot train on


def format_problem(method: str, data_format: str | None) -> str | None:
    """What keeps a file of this format from training with the method, or None when it can."""
    formats = METHODS[method].formats
    if data_format is None or data_format in formats:
        return None
    wanted = " or ".join(FORMAT_NAMES[f] for f in formats)
    return f"{FORMAT_NAMES[data_format]} examples; {method} fine-tuning needs {wanted} examples"
