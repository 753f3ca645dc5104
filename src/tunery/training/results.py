"""The result file of a job: one CSV row per step, in the columns the guide lists, plus the
legacy classification metrics of each epoch when they were asked for; a DPO job's in its own
columns (the loss, then the preference figures, training and validation)."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunery.training.dpo import DPOStepMetrics
    from tunery.training.sft import StepMetrics

COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
DPO_COLUMNS = ["step", "train_loss", "train_reward_accuracy", "train_reward_margin", "train_chosen_logps",
               "train_rejected_logps", "valid_loss", "valid_reward_accuracy", "valid_reward_margin",
               "full_valid_loss", "full_valid_reward_accuracy", "full_valid_reward_margin"]
RESULTS_FILENAME = "step_metrics.csv"


def results_csv(history: list[StepMetrics], extra: dict[int, dict[str, Any]] | None = None) -> bytes:
    """CSV bytes; `extra` adds columns to some steps (classification metrics at epoch ends)."""
    extra = extra or {}
    extra_columns = sorted({key for values in extra.values() for key in values})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS + extra_columns)
    for m in history:
        row = [m.step, m.train_loss, m.train_mean_token_accuracy, m.valid_loss, m.valid_mean_token_accuracy]
        row += [extra.get(m.step, {}).get(column) for column in extra_columns]
        writer.writerow(["" if value is None else value for value in row])
    return out.getvalue().encode()


def dpo_results_csv(history: list[DPOStepMetrics], extra: dict[int, dict[str, Any]] | None = None) -> bytes:
    """CSV bytes in DPO_COLUMNS (a DPO job has no classification metrics: `extra` stays empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(DPO_COLUMNS)
    for m in history:
        writer.writerow(["" if (value := getattr(m, column)) is None else value for column in DPO_COLUMNS])
    return out.getvalue().encode()
