"""Shared fixtures: the real SmolLM2 tokenizer, a tiny 2-layer Llama built on it, and a real
`tunery serve` process on a free port driven by the official openai client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tunery.catalog import _embedded_gguf
from tunery.cli.common import quiet_libraries

quiet_libraries()  # as `tunery` does, before transformers is imported

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
TINY_MODEL = "tiny-llama"
TEST_KEY = "sk-tunery-test-key"
SERVER_START_SECONDS = 120


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="session")
def smol_tokenizer(tmp_path_factory):
    """The embedded model's real tokenizer, read from its GGUF once per session."""
    from transformers import AutoTokenizer

    gguf = _embedded_gguf()
    folder = tmp_path_factory.mktemp("smol-tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer) -> Path:
    """A 2-layer Llama with random weights and the real SmolLM2 tokenizer and chat template.

    Its weights start wider than Llama's default (initializer_range 0.2, not 0.02): with the
    default, the final norm keeps every logit near zero and LoRA, which adapts neither the norm
    nor the embeddings, cannot make any answer likely within a test's few steps."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.2,
                         tie_word_embeddings=True, bos_token_id=smol_tokenizer.bos_token_id,
                         eos_token_id=smol_tokenizer.eos_token_id, pad_token_id=smol_tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny") / TINY_MODEL
    LlamaForCausalLM(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, env: dict[str, str | None]):
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = open(data_dir.parent / f"server-{self.port}.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunery", "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
            env={k: v for k, v in {**os.environ, "TUNERY_API_KEY": TEST_KEY, **env}.items() if v is not None},
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + SERVER_START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.output()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"server did not start:\n{self.output()}")
            time.sleep(0.2)

    def client(self, api_key: str = TEST_KEY) -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=300)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def _server_factory(root: Path):
    servers: list[Server] = []

    def start(*, base_models: tuple[Path, ...] = (), warm_up: bool = False, env_key: bool = True,
              data_dir: Path | None = None, env: dict[str, str] | None = None) -> Server:
        """env_key=False starts it without TUNERY_API_KEY; data_dir reuses a stopped server's state."""
        data_dir = data_dir or root / f"server-data-{len(servers)}"
        for folder in base_models:
            shutil.copytree(folder, data_dir / "base_models" / folder.name)
        settings = {"TUNERY_WARM_UP": str(warm_up).lower()} | ({} if env_key else {"TUNERY_API_KEY": None})
        server = Server(data_dir, settings | (env or {}))
        servers.append(server)
        return server

    return start, servers


@pytest.fixture
def start_server(tmp_path) -> Iterator:
    """Start `tunery serve` on a fresh data dir; extra base model folders are copied in first."""
    start, servers = _server_factory(tmp_path)
    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory, tiny_model_dir) -> Iterator[Server]:
    """One server with the tiny model for a whole test module."""
    start, servers = _server_factory(tmp_path_factory.mktemp("server"))
    yield start(base_models=(tiny_model_dir,))
    for server in servers:
        server.stop()


@pytest.fixture
def client(tiny_server) -> OpenAI:
    return tiny_server.client()
