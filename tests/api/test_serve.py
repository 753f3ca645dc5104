"""`tunery serve` runs a worker process beside the API and takes it along when it stops."""

from __future__ import annotations

import time
from pathlib import Path


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()  # an exited child nobody reaped is gone too
    except FileNotFoundError:
        return False


def test_stopping_the_server_stops_its_worker(start_server):
    server = start_server()
    (worker,) = children(server.process.pid)
    assert running(worker)
    server.process.terminate()  # uvicorn re-raises SIGTERM, so no cleanup code of ours runs
    server.process.wait(timeout=30)
    deadline = time.time() + 15
    while running(worker):
        assert time.time() < deadline, "the worker outlived the server"
        time.sleep(0.1)
