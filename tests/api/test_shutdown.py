"""`tunery serve` stops promptly with generation in flight: SIGTERM stops the engine before uvicorn
waits for the requests in flight, which answer an error at once, and the server exits."""

from __future__ import annotations

import signal
import socket
import time

import openai
import pytest

from tests.helpers import TINY_MODEL, key_for, send_raw
from tunery.inference.engine import MAX_BATCH


def answer(sock: socket.socket) -> str:
    """All the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received.decode(errors="replace")


def test_the_server_stops_promptly_with_generation_in_flight(start_server, tiny_model_dir):
    server = start_server(base_models=(tiny_model_dir,))
    burst = {"model": TINY_MODEL, "prompt": ["red", "green"], "n": MAX_BATCH, "max_tokens": 900}  # slots full, more waiting
    waiting = send_raw(server.port, "/v1/completions", burst)
    other = server.client(key_for(server, "org-b"))  # not behind the burst: its turn comes at once
    streamed = other.completions.create(model=TINY_MODEL, prompt="red", max_tokens=900, stream=True)
    next(iter(streamed))  # generating, beside the burst
    server.process.send_signal(signal.SIGTERM)
    stopped = time.time()
    server.process.wait(timeout=15)
    assert time.time() - stopped < 10, server.output()
    response = answer(waiting)
    assert response.startswith("HTTP/1.1 500") and "server_shutting_down" in response, f"{response}\n{server.output()}"
    with pytest.raises(openai.APIError, match="shutting down"):  # the stream's error event
        list(streamed)
