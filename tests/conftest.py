"""Fixtures: an isolated data directory for every test, the real SmolLM2 tokenizer, a tiny
2-layer Llama built on it, the toy task trained on it, and real `tunery serve` processes on free
ports driven by the official openai client (helpers.py holds the plain functions and names)."""

from __future__ import annotations

import os
import tempfile

# Before anything imports huggingface_hub (it reads these once): tests never reach a model hub, and
# the Hugging Face cache is the session's own, where tests write the hub models they need.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="tunery-hf-home-")
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from tests.helpers import (COLOR_EXAMPLES, SCREENSHOTS, TINY_MODEL, PostgresCluster, Server, cancel_active_jobs,
                           server_factory)
from tunery.catalog import _embedded_gguf
from tunery.cli.common import quiet_libraries

quiet_libraries()  # as `tunery` does, before transformers is imported


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="session")
def forbidding_hub() -> Iterator[str]:
    """The address of a Hugging Face hub stand-in that answers 403 to everything at once, as a
    network's proxy that blocks the hub does (a refused connection would be retried by
    huggingface_hub for 23 s first)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Forbidden(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"error": "blocked by this network\'s proxy"}'
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory) -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the session; the tests that need it are skipped, saying
    why, where PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does)."""
    import tempfile as _tempfile

    # A short folder of its own: the server's Unix socket path must stay under 107 characters.
    cluster = PostgresCluster.find(Path(_tempfile.mkdtemp(prefix="tunery-pg-")))
    if cluster is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql); its tests need initdb and pg_ctl")
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, monkeypatch) -> str:
    """Each database tunery runs on, for the test and every process it starts (TUNERY_DATABASE_URL):
    the data directory's SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        monkeypatch.delenv("TUNERY_DATABASE_URL", raising=False)
        return "sqlite"
    url = request.getfixturevalue("postgres_cluster").new_database()
    monkeypatch.setenv("TUNERY_DATABASE_URL", url)
    return url


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


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """The embedded SmolLM2-135M-Instruct converted once per session (about 20 s on 2 cores), for
    servers to start with instead of converting it again."""
    from tunery.catalog import EMBEDDED_MODEL, Catalog
    from tunery.storage import BlobStore

    return Catalog(BlobStore(tmp_path_factory.mktemp("smollm2"))).path(EMBEDDED_MODEL)


@pytest.fixture(params=["llamacpp", "torch"])
def cpu_backend(request) -> str:
    """Each engine that decodes on a CPU (TUNERY_CPU_BACKEND): llama.cpp (skipped, saying why, where
    llama-cpp-python is not installed) and the batched torch decoder."""
    from tunery.inference import llamacpp

    if request.param == "llamacpp" and not llamacpp.installed():
        pytest.skip("llama-cpp-python is not installed (make installs it; a C++ compiler and cmake build it)")
    return request.param


@pytest.fixture(scope="session")
def tiny_architectures(tmp_path_factory, smol_tokenizer) -> dict[str, Path]:
    """A tiny random model of each popular architecture, with the real SmolLM2 tokenizer, by
    name: llama3 (Llama 3 RoPE scaling), mistral, qwen2, qwen3 (query/key norms), gemma2
    (soft-capped logits, sliding windows), gemma3 and phi3 (fused projections)."""
    import torch
    from transformers import (AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, LlamaConfig, MistralConfig,
                              Phi3Config, Qwen2Config, Qwen3Config)

    shape = dict(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.2,
                 bos_token_id=smol_tokenizer.bos_token_id, eos_token_id=smol_tokenizer.eos_token_id,
                 pad_token_id=smol_tokenizer.pad_token_id)
    configs = {
        "llama3": LlamaConfig(**shape, tie_word_embeddings=True, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 128}),
        "mistral": MistralConfig(**shape, sliding_window=None),
        "qwen2": Qwen2Config(**shape, tie_word_embeddings=True),
        "qwen3": Qwen3Config(**shape, head_dim=16, tie_word_embeddings=True),
        "gemma2": Gemma2Config(**shape, head_dim=16, query_pre_attn_scalar=16, sliding_window=64),
        "gemma3": Gemma3TextConfig(**shape, head_dim=16, sliding_window=64),
        "phi3": Phi3Config(**shape),
    }
    root = tmp_path_factory.mktemp("architectures")
    folders = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        folders[name] = root / f"tiny-{name}"
        AutoModelForCausalLM.from_config(config).save_pretrained(folders[name])
        smol_tokenizer.save_pretrained(folders[name])
    return folders


@pytest.fixture
def start_server(tmp_path) -> Iterator:
    """Start `tunery serve` on a fresh data dir; extra base model folders are copied in first."""
    start, servers = server_factory(tmp_path)
    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory) -> Iterator:
    """Start `tunery serve` processes that live as long as the test module."""
    start, servers = server_factory(tmp_path_factory.mktemp("module-server"))
    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def smol_server(tmp_path_factory, smollm2_dir) -> Iterator[Server]:
    """A server whose base model is the embedded SmolLM2-135M-Instruct (to answer, to judge, to
    fine-tune), shared by the slow tests of every module: each start costs half a minute (imports,
    the model's conversion for llama.cpp). Tests see the files, jobs and models others left."""
    start, servers = server_factory(tmp_path_factory.mktemp("smol-server"))
    yield start(base_models=(smollm2_dir,))
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def _shared_tiny_server(tmp_path_factory, tiny_model_dir) -> Iterator[Server]:
    start, servers = server_factory(tmp_path_factory.mktemp("server"))
    yield start(base_models=(tiny_model_dir,))
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def tiny_server(_shared_tiny_server) -> Iterator[Server]:
    """A server with the tiny model, shared by the test modules (each start costs seconds of
    imports); a module's tests see the files, jobs and models earlier modules left, and the jobs
    a module leaves active are cancelled after it, so that they hold up nobody's queue."""
    yield _shared_tiny_server
    cancel_active_jobs(_shared_tiny_server.client())


@pytest.fixture
def client(tiny_server) -> OpenAI:
    return tiny_server.client()


@pytest.fixture(scope="session")
def train_tiny(tiny_model_dir) -> Callable:
    """train_tiny(on_step=..., examples=..., **config) -> (recipe, result): the SFT recipe on the
    tiny model, by default 15 epochs of the colour-to-fruit task at batch 4 (45 steps)."""
    from tunery.training.sft import SFTConfig, SFTRecipe

    def train(on_step=lambda m: True, examples=COLOR_EXAMPLES, **overrides):
        config = SFTConfig(base_model=str(tiny_model_dir), n_epochs=15, batch_size=4, learning_rate=1e-2, seed=7)
        for key, value in overrides.items():
            setattr(config, key, value)
        recipe = SFTRecipe(config)
        recipe.setup(examples)
        return recipe, recipe.train(on_step)

    return train


@pytest.fixture(scope="session")
def architecture_adapters(tiny_architectures, train_tiny, tmp_path_factory) -> dict[str, Path]:
    """A LoRA adapter trained on the colour task for each tiny architecture, by name."""
    root = tmp_path_factory.mktemp("arch-adapters")
    folders = {}
    for name, base in tiny_architectures.items():
        recipe, result = train_tiny(base_model=str(base), n_epochs=30)
        folders[name] = root / name
        folders[name].mkdir()
        recipe.save_checkpoint(folders[name], result.history[-1])
        recipe.cleanup()
    return folders


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's `chromium`) driven by Playwright; the tests that need it are
    skipped, saying why, where either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the console's browser tests need it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        # Chromium's sandbox cannot start as root (CI runs as root).
        instance = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield instance
        instance.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser page at 1280x800. Any script error, and any content blocked by the
    Content-Security-Policy, fails the test; its screenshot is saved in test-artifacts/console/."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    new_page = context.new_page()
    problems: list[str] = []
    new_page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    new_page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
                if message.type == "error" and "Failed to load resource" not in message.text else None)
    yield new_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    new_page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not problems, problems
