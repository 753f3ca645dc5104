"""A `tunery serve` process for the benchmarks: started on a free port, stopped on exit."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from openai import OpenAI

KEY = "sk-tunery-bench"


@contextlib.contextmanager
def serve(data_dir: Path) -> Iterator[OpenAI]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(data_dir.parent / f"{data_dir.name}-server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "tunery", "serve", "--port", str(port), "--data-dir", str(data_dir)],
                               env={**os.environ, "TUNERY_API_KEY": KEY}, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tunery serve exited; see {log.name}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            time.sleep(0.3)
        yield OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=600)
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def wait_for(client: OpenAI, job_id: str, timeout: float = 1800):
    deadline = time.time() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in ("succeeded", "failed", "cancelled"):
        if time.time() > deadline:
            raise TimeoutError(f"{job_id} still {job.status}")
        time.sleep(1)
    if job.status != "succeeded":
        raise RuntimeError(f"{job_id} {job.status}: {job.error}")
    return job
