"""One lock for loading Hugging Face tokenizers, configs and models in a process: transformers'
first imports are lazy and not safe when two threads trigger them at once (concurrent first
requests failed with ImportError), so every load in a process takes this lock."""

from __future__ import annotations

import threading

HF_LOADING = threading.RLock()  # re-entrant: a load may load (converting a model loads its tokenizer)
