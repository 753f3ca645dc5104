"""The legacy API's classification metrics, computed on the validation set at each epoch end
for prompt/completion data: accuracy and weighted F1 for any number of classes; for two
classes also precision, recall, F-beta, AUROC and AUPRC. A class is predicted from the first
token of each class's completion, as the legacy guide recommends (classes that are one token)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PREFIX = "classification/"


@dataclass
class ClassificationSpec:
    n_classes: int | None = None  # multiclass tasks
    positive_class: str | None = None  # binary tasks: the completion that counts as positive
    betas: list[float] = field(default_factory=lambda: [1.0])  # F-beta scores of binary tasks


class ClassificationError(ValueError):
    def __init__(self, message: str, param: str = "compute_classification_metrics"):
        super().__init__(message)
        self.param = param  # the job parameter at fault


def first_tokens(tokenizer, classes: list[str]) -> list[int]:
    tokens = [tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in classes]
    if len(set(tokens)) != len(tokens):
        raise ClassificationError("classes must start with different tokens to be told apart by the first token")
    return tokens


def scorer(options: dict[str, Any], examples: list[dict[str, Any]], valid_examples: list[dict[str, Any]],
           tokenizer) -> Callable[[Any], dict[str, float]]:
    """The epoch-end scorer of a job that asked for classification metrics (options: n_classes,
    positive_class, betas), checked against its training data; ClassificationError otherwise."""
    classes = sorted({e["completion"] for e in examples})
    spec = ClassificationSpec(options.get("n_classes"), options.get("positive_class"), options.get("betas") or [1.0])
    if spec.positive_class is not None and (len(classes) != 2 or spec.positive_class not in classes):
        raise ClassificationError(f"classification_positive_class {spec.positive_class!r} must be one of exactly "
                                  f"two completions; the training file has {classes[:10]}", "classification_positive_class")
    try:
        first_tokens(tokenizer, classes)
    except ClassificationError as exc:
        raise ClassificationError(f"Classification metrics: {exc}; the completions are {classes[:10]}") from None
    return lambda recipe: evaluate(recipe, valid_examples, classes, spec)


def evaluate(recipe, valid_examples: list[dict[str, Any]], classes: list[str], spec: ClassificationSpec) -> dict[str, float]:
    """Predict each validation example's class with the recipe's current model and score it."""
    tokenizer = recipe.tokenizer
    class_tokens = first_tokens(tokenizer, classes)
    prompts = [tokenizer(e["prompt"], add_special_tokens=False)["input_ids"] for e in valid_examples]
    logprobs = recipe.next_token_logprobs(prompts)[:, class_tokens].cpu().numpy()
    return classification_metrics([e["completion"] for e in valid_examples], classes, logprobs, spec)


def classification_metrics(truth: list[str], classes: list[str], logprobs: np.ndarray,
                           spec: ClassificationSpec) -> dict[str, float]:
    """Metrics from each example's log-probabilities of the classes ([examples, classes])."""
    from sklearn.metrics import (  # sklearn takes seconds to import: only jobs that ask for these metrics pay
        accuracy_score,
        average_precision_score,
        f1_score,
        fbeta_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    predicted = [classes[i] for i in logprobs.argmax(axis=1)]
    metrics = {
        "accuracy": accuracy_score(truth, predicted),
        "weighted_f1_score": f1_score(truth, predicted, average="weighted", zero_division=0),
    }
    if spec.positive_class is not None and len(classes) == 2:
        positive = classes.index(spec.positive_class)
        is_positive = np.array([t == spec.positive_class for t in truth])
        said_positive = np.array([p == spec.positive_class for p in predicted])
        shifted = logprobs - logprobs.max(axis=1, keepdims=True)
        probability = np.exp(shifted[:, positive]) / np.exp(shifted).sum(axis=1)  # P(positive | one of the two)
        metrics["precision"] = precision_score(is_positive, said_positive, zero_division=0)
        metrics["recall"] = recall_score(is_positive, said_positive, zero_division=0)
        for beta in spec.betas:
            metrics[f"f{float(beta)}"] = fbeta_score(is_positive, said_positive, beta=beta, zero_division=0)
        if 0 < is_positive.sum() < len(is_positive):  # both classes present
            metrics["auroc"] = roc_auc_score(is_positive, probability)
            metrics["auprc"] = average_precision_score(is_positive, probability)
    return {PREFIX + name: float(value) for name, value in metrics.items()}
