"""Serving that one request cannot take over, through a real HTTP server (uvicorn in this process,
so that the test can look at the engine's own state): a client that leaves stops its generation,
streamed or not, and one organization's burst does not hold up another's chat."""

from __future__ import annotations

import shutil
import threading
import time
from types import SimpleNamespace

import pytest
import uvicorn
from openai import OpenAI

from tests.helpers import TEST_KEY, TINY_MODEL, free_port, send_raw
from tunery.api.app import create_app
from tunery.config import Settings
from tunery.inference.engine import MAX_BATCH

BURST = {"model": TINY_MODEL, "prompt": ["red", "green"], "n": MAX_BATCH}  # every slot taken, and as many waiting
BURST_SIZE = 2 * MAX_BATCH


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    """The API with the tiny model, served by uvicorn in a thread of this process."""
    data_dir = tmp_path_factory.mktemp("served") / "data"
    shutil.copytree(tiny_model_dir, data_dir / "base_models" / TINY_MODEL)
    app = create_app(Settings(data_dir=data_dir, api_key=TEST_KEY, warm_up=False, kv_cache_mb=64))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 60)
    container = app.state.container
    yield SimpleNamespace(port=server.config.port, container=container, engine=container.chat.engine)
    server.should_exit = True
    thread.join(60)


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "not within the time allowed"
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_stops_its_generation(served, stream):
    assert served.engine.kv_cache_bytes == 64 << 20  # TUNERY_KV_CACHE_MB reached the engine
    wait_until(lambda: served.engine.busy() == 0)
    sock = send_raw(served.port, "/v1/completions", BURST | {"max_tokens": 900, "stream": stream})
    wait_until(lambda: len(served.engine._active) == MAX_BATCH)  # decoding, and as many waiting
    sock.close()
    wait_until(lambda: served.engine.busy() == 0, 5)  # its sequences, running and waiting, are gone


def test_an_organizations_burst_does_not_hold_up_anothers_chat(served):
    repo = served.container.organizations.repo
    other = OpenAI(base_url=f"http://127.0.0.1:{served.port}/v1", api_key=repo.create_key(repo.ensure("org-b").id),
                   max_retries=0)
    wait_until(lambda: served.engine.busy() == 0)
    sock = send_raw(served.port, "/v1/completions", BURST | {"max_tokens": 60, "seed": 1})
    wait_until(lambda: len(served.engine._active) == MAX_BATCH)
    chat = other.chat.completions.create(model=TINY_MODEL, max_tokens=3, messages=[{"role": "user", "content": "red"}])
    assert chat.usage.completion_tokens == 3
    assert served.engine.busy() == BURST_SIZE  # answered before any completion of the burst had ended
    sock.close()
    wait_until(lambda: served.engine.busy() == 0)
