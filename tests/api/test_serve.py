"""`tunery serve` runs a worker process beside the API and takes it along when it stops, and
makes ready to chat (imports torch and transformers' model classes) before the first chat asks."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers import TINY_MODEL


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def running(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()  # an exited child nobody reaped is gone too
    except FileNotFoundError:
        return False


def loaded_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def test_the_server_makes_ready_to_chat_and_stopping_it_stops_its_worker(start_server):
    server = start_server()
    (worker,) = children(server.process.pid)
    assert running(worker)
    deadline = time.time() + 60  # no chat was asked: torch comes from the background imports
    while not loaded_torch(server.process.pid):
        assert time.time() < deadline, "the server had not imported torch a minute after starting"
        time.sleep(0.2)
    server.process.terminate()  # uvicorn re-raises SIGTERM, so no cleanup code of ours runs
    server.process.wait(timeout=30)
    deadline = time.time() + 15
    while running(worker):
        assert time.time() < deadline, "the worker outlived the server"
        time.sleep(0.1)


def test_chats_sent_as_the_server_starts_are_answered(start_server, tiny_model_dir):
    """The first requests race the background imports (transformers' lazy imports are not safe from
    two threads at once): each is answered."""
    server = start_server(base_models=(tiny_model_dir,))
    client = server.client()

    def chat(i: int) -> str:
        return client.chat.completions.create(model=TINY_MODEL, messages=[{"role": "user", "content": f"red {i}"}],
                                              max_tokens=2).choices[0].finish_reason

    def complete(i: int) -> str:
        return client.completions.create(model=TINY_MODEL, prompt=f"green {i}", max_tokens=2).choices[0].finish_reason

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: (chat if i % 2 else complete)(i), range(4)))
    assert all(reason in ("length", "stop") for reason in answers), answers
