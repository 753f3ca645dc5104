"""The fine-tuning guide's Marv walkthrough, unchanged but for base_url and api_key.

    python examples/marv_walkthrough.py [TRAINING_FILE] [MODEL]

reads OPENAI_BASE_URL and OPENAI_API_KEY, like any openai program.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from openai import OpenAI

MARV_SYSTEM = "Marv is a factual chatbot that is also sarcastic."


def run(client: OpenAI, training_file: str, model: str = "SmolLM2-135M-Instruct", *,
        poll_seconds: float = 1.0, timeout: float = 600, **job_options) -> dict:
    """Upload, train, follow, chat: returns the objects seen on the way."""
    started = time.time()
    file = client.files.create(file=open(training_file, "rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=file.id, model=model, suffix="marv", **job_options)
    statuses = [job.status]
    while job.status not in ("succeeded", "failed", "cancelled"):
        if time.time() - started > timeout:
            raise TimeoutError(f"job {job.id} still {job.status} after {timeout} s")
        time.sleep(poll_seconds)
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status != statuses[-1]:
            statuses.append(job.status)
    if job.status != "succeeded":
        raise RuntimeError(f"job {job.id} ended {job.status}: {job.error}")
    events = client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=10)
    completion = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "system", "content": MARV_SYSTEM},
                  {"role": "user", "content": "What's the capital of France?"}],
    )
    return {"file": file, "job": job, "statuses": statuses, "events": events, "completion": completion,
            "seconds": time.time() - started}


MARV_FILE = Path(__file__).parent / "data" / "marv.jsonl"

if __name__ == "__main__":
    result = run(OpenAI(), *sys.argv[1:3] if len(sys.argv) > 1 else [str(MARV_FILE)])
    for event in reversed(result["events"].data):
        print(event.message)
    print(f"{result['job'].fine_tuned_model}: {result['completion'].choices[0].message.content}")
    print(f"upload to first fine-tuned answer: {result['seconds']:.1f} s")
