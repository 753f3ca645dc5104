"""What the evals' tests share: an item schema of questions with their answers, a string_check
criterion comparing the sample with the answer, and waiting for a run to end."""

from __future__ import annotations

import time

from openai import OpenAI

ANSWER_SCHEMA = {"type": "object", "properties": {"country": {"type": "string"}, "answer": {"type": "string"}},
                 "required": ["answer"]}
EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}
RUN_FINISHED = ("completed", "failed", "canceled")


def wait_for_run(client: OpenAI, eval_id: str, run_id: str, timeout: float = 120):
    """The run once it has completed, failed or been canceled."""
    deadline = time.time() + timeout
    while (run := client.evals.runs.retrieve(run_id, eval_id=eval_id)).status not in RUN_FINISHED:
        assert time.time() < deadline, f"run still {run.status}"
        time.sleep(0.1)
    return run
