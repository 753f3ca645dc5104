"""Inference: base models loaded once, fine-tuned adapters attached on demand, text generation.
Free of HTTP and SQL: callers pass the Weights the models service resolved and plain parameters."""
from __future__ import annotations

import importlib
import logging

from tunery.loading import HF_LOADING

log = logging.getLogger(__name__)

# What a server's first chat imports (some 5 s on a 2-core CPU, where the first chat waited for it):
# the engine with torch, the GGUF export, transformers' auto classes, and the embedded default
# model's architecture (SmolLM2 is a Llama).
FIRST_CHAT_MODULES = ("tunery.inference.engine", "tunery.export", "transformers.models.auto.modeling_auto",
                      "transformers.models.auto.tokenization_auto", "transformers.models.llama.modeling_llama")


def preload() -> None:
    """Imports what the first chat needs, so that it does not wait for it. Meant for a background
    thread started with the server: a chat that comes first waits for it, under HF_LOADING, since
    transformers' lazy imports are not safe from two threads at once."""
    with HF_LOADING:
        for name in FIRST_CHAT_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - an architecture missing only means the first chat imports it
                log.warning("could not preload %s", name, exc_info=True)
