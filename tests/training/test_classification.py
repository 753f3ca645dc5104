"""Classification metrics on a known binary case, checked against values worked out by hand
and against scikit-learn called directly on the positive-class probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tunery.training.classification import ClassificationSpec, classification_metrics

CLASSES = [" negative", " positive"]


def logprobs_for(p_positive: list[float]) -> np.ndarray:
    """Log-probabilities of the two class tokens (unnormalised: a shared offset must not matter)."""
    p = np.array(p_positive)
    return np.log(np.stack([1 - p, p], axis=1)) - 3.0


def test_binary_metrics_of_a_known_case():
    truth = [" positive", " positive", " positive", " negative", " negative", " negative"]
    p_positive = [0.9, 0.6, 0.4, 0.7, 0.2, 0.1]  # predicted: pos, pos, neg, pos, neg, neg
    metrics = classification_metrics(truth, CLASSES, logprobs_for(p_positive),
                                      ClassificationSpec(positive_class=" positive", betas=[1.0, 2.0]))
    # 2 true positives, 1 false positive, 1 false negative, 2 true negatives.
    assert metrics["classification/accuracy"] == pytest.approx(4 / 6)
    assert metrics["classification/precision"] == pytest.approx(2 / 3)
    assert metrics["classification/recall"] == pytest.approx(2 / 3)
    assert metrics["classification/f1.0"] == pytest.approx(2 / 3)
    assert metrics["classification/f2.0"] == pytest.approx(2 / 3)  # precision == recall: every beta agrees
    assert metrics["classification/weighted_f1_score"] == pytest.approx(2 / 3)
    # AUROC: of the 9 (positive, negative) pairs, 7 rank the positive higher (0.6 and 0.4 fall below 0.7).
    assert metrics["classification/auroc"] == pytest.approx(7 / 9)
    is_positive = [t == " positive" for t in truth]
    assert metrics["classification/auroc"] == pytest.approx(roc_auc_score(is_positive, p_positive))
    # AUPRC (average precision): ranks 0.9 P, 0.7 N, 0.6 P, 0.4 P -> (1/1 + 2/3 + 3/4) / 3
    assert metrics["classification/auprc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_multiclass_reports_accuracy_and_weighted_f1_only():
    classes = [" billing", " shipping", " technical"]
    truth = [" billing", " shipping", " technical", " technical"]
    logprobs = np.log(np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2]]))
    metrics = classification_metrics(truth, classes, logprobs, ClassificationSpec(n_classes=3))
    assert set(metrics) == {"classification/accuracy", "classification/weighted_f1_score"}
    assert metrics["classification/accuracy"] == pytest.approx(0.75)
    # Per class F1: billing 2/3 (1 right, 1 wrongly said), shipping 1, technical 2/3; weighted 1:1:2.
    assert metrics["classification/weighted_f1_score"] == pytest.approx((2 / 3 + 1 + 2 * 2 / 3) / 4)
