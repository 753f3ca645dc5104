"""llama.cpp as the forward pass of CPU serving: the models GGUF describes (export.GGUF_ARCHITECTURES:
llama, mistral, qwen2, qwen3) run on llama.cpp's quantized CPU kernels through llama-cpp-python's
C API (no llama-cpp-python server, no sampler of its own).

It has decoder.Decoder's interface, so the engine keeps everything else (continuous batching,
sampling, penalties, logprobs, stop sequences, streams, the adapter cache):

- the base model as GGUF, converted once (float16, then quantized to TUNERY_GGUF_TYPE) into the
  data directory's gguf folder. q8_0 by default: each weight within 1/254 of its block's largest,
  near-lossless, and on a 2-core AVX2 CPU as fast for one stream as the embedded model's own Q4_1
  GGUF and faster for several and for prompts; q4_0 decodes ~1.4x faster again and kept
  bench/quality.py's scores on SmolLM2, but rounds float weights to 4 bits (opt-in);
- one llama.cpp context whose KV cache every sequence shares (a sequence id per engine slot),
  allocated once at its bound (TUNERY_KV_CACHE_MB; a longer context is served shorter, and a
  sequence without room waits);
- each LoRA adapter converted to llama.cpp's GGUF LoRA format as it is loaded (~0.1 s; the file
  goes once llama.cpp has read it). llama.cpp applies adapters
  per context, so a step runs one llama_decode per adapter among its rows (rows of one adapter,
  or of the base, are decoded together);
- a prompt that begins as a sequence already in the cache begins (same adapter: a system prompt,
  few-shot examples, n choices of one prompt) shares that sequence's cells for the common part and
  computes only the rest;
- its OpenMP threads should sleep at their barriers instead of spinning (OMP_WAIT_POLICY=PASSIVE,
  which `tunery serve` sets for its own process before torch loads OpenMP, unless the environment
  says otherwise): spinning threads wait for each other's time slices whenever another process
  computes, as a worker training beside the server does. Measured on 2 cores beside a process
  multiplying matrices: 64 four-token completions took 7.3 s spinning and 0.57 s sleeping."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import json
import logging
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from tunery.export import ExportError, gguf_architecture, write_gguf, write_gguf_lora
from tunery.inference.decoder import KV_CACHE_BYTES, kv_bytes_per_token, serving_context
from tunery.weights import Weights

log = logging.getLogger(__name__)
GGUF_TYPES = ("auto", "q8_0", "q4_0", "q4_1", "f16")  # "auto": q8_0
KV_ELEMENT_BYTES = 2  # llama.cpp keeps keys and values in float16
PREFILL_CHUNK = 512  # prompt tokens per llama_decode call
MIN_SHARED_PREFIX = 16  # shorter common beginnings are computed again (not worth the bookkeeping)
_BACKEND = threading.Lock()
_started = False


@functools.cache  # asked on every request (Engine.context_length): the answer cannot change in a process
def installed() -> bool:
    """Whether llama-cpp-python is importable (it is compiled at install: `pip install -e '.[cpu]'`)."""
    return importlib.util.find_spec("llama_cpp") is not None


def serves(config: dict) -> bool:
    """Whether this decoder can serve a model of this config.json (installed, and an architecture GGUF writes)."""
    try:
        gguf_architecture(config)
    except ExportError:
        return False
    return installed()


def kv_tokens(config: dict, sequences: int, kv_cache_bytes: int = KV_CACHE_BYTES) -> int:
    """Cells of the KV cache all sequences share: room for every slot's full context when that fits
    in kv_cache_bytes, else what does (a model's context beyond it is not served on llama.cpp)."""
    per_token = kv_bytes_per_token(config, KV_ELEMENT_BYTES)
    return min(sequences * serving_context(config), max(256, kv_cache_bytes // per_token // 256 * 256))


def base_gguf(folder: Path, gguf_dir: Path, gguf_type: str = "auto") -> Path:
    """The GGUF file serving the base model of `folder`: a conversion (float16, quantized to
    gguf_type) made once into gguf_dir. Raises ExportError when the model cannot be written as
    GGUF (a RoPE scaling GGUF has no name for)."""
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"TUNERY_GGUF_TYPE={gguf_type!r}: use one of {', '.join(GGUF_TYPES)}.")
    wanted = "q8_0" if gguf_type == "auto" else gguf_type
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    target = gguf_dir / f"{folder.name}-{key}.{wanted}.gguf"
    if target.exists():
        return target
    gguf_dir.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to GGUF (%s, once)", folder.name, wanted)
    with tempfile.TemporaryDirectory(dir=gguf_dir, prefix=".converting-") as staging:  # other processes may convert too
        f16, staged = Path(staging) / "f16.gguf", Path(staging) / "model.gguf"
        write_gguf(Weights("base", folder), f16, folder.name, with_tokenizer=False)  # we feed it token ids
        if wanted == "f16":
            f16.rename(staged)
        else:
            _quantize(f16, staged, wanted)
        staged.rename(target)
    return target


def _quantize(source: Path, target: Path, gguf_type: str) -> None:
    llama_cpp = _start_backend()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{gguf_type.upper()}")
    params.allow_requantize = True
    params.nthread = torch.get_num_threads()
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {source.name} to {gguf_type}")


def _start_backend():
    """llama.cpp's backend, once per process, its log sent to ours (errors only); the module."""
    global _started, _log_callback
    with _BACKEND:
        import llama_cpp

        if _started:
            return llama_cpp

        def forward(level: int, text: bytes, _data) -> None:
            if level == 4:  # GGML_LOG_LEVEL_ERROR (5 continues the previous line, whatever its level)
                log.error("llama.cpp: %s", text.decode(errors="replace").rstrip())

        _log_callback = llama_cpp.llama_log_callback(forward)  # kept: llama.cpp calls it for the process's life
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p())
        llama_cpp.llama_backend_init()
        _started = True
        return llama_cpp


class LlamaCppAdapter:
    """A LoRA adapter loaded into llama.cpp from its GGUF conversion."""

    def __init__(self, handle, bytes_: int):
        self.handle, self.bytes = handle, bytes_


class LlamaCppDecoder:
    def __init__(self, folder: Path, *, gguf_dir: Path, gguf_type: str = "auto", sequences: int = 32,
                 threads: int | None = None, kv_cache_bytes: int = KV_CACHE_BYTES):
        self._llama = llama_cpp = _start_backend()
        self.config = json.loads((folder / "config.json").read_text())
        self.gguf_dir = gguf_dir
        self.path = base_gguf(folder, gguf_dir, gguf_type)
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), llama_cpp.llama_model_default_params())
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {self.path}")
        self.vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self._model))
        self.capacity = kv_tokens(self.config, sequences, kv_cache_bytes)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.capacity
        params.n_batch = params.n_ubatch = PREFILL_CHUNK
        params.n_seq_max = sequences
        params.kv_unified = True  # sequences share the cache's cells: a long one may use what short ones leave
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED  # measured faster on CPU
        params.n_threads = params.n_threads_batch = threads or torch.get_num_threads()
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise RuntimeError(f"llama.cpp could not make a context of {self.capacity} tokens for {self.path.name}")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self.weight_bytes = self.path.stat().st_size + self.capacity * kv_bytes_per_token(self.config, KV_ELEMENT_BYTES)  # + the KV cache
        self._batch = llama_cpp.llama_batch_init(max(PREFILL_CHUNK, sequences), 0, 1)
        self._reserved: dict[int, int] = {}
        self._cached: dict[int, tuple[LlamaCppAdapter | None, list[int]]] = {}  # slot -> its adapter, tokens in the cache
        self._applied: LlamaCppAdapter | None = None
        self._no_adapter = (llama_cpp.llama_adapter_lora_p_ctypes * 1)()
        self._scale = (ctypes.c_float * 1)(1.0)

    def close(self) -> None:
        if self._ctx:
            self._llama.llama_batch_free(self._batch)
            self._llama.llama_free(self._ctx)
            self._llama.llama_model_free(self._model)
            self._ctx = self._model = None

    # adapters ----------------------------------------------------------------------------------
    def load_adapter(self, folder: Path) -> LlamaCppAdapter:
        """The adapter converted to GGUF (a file only while it is loaded: conversion takes ~0.1 s)."""
        (self.gguf_dir / "adapters").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.gguf_dir / "adapters") as staging:
            path = Path(staging) / "adapter.gguf"
            write_gguf_lora(folder, self.config, path)
            handle = self._llama.llama_adapter_lora_init(self._model, str(path).encode())  # read whole: the file may go
            size = path.stat().st_size
        if not handle:
            raise RuntimeError(f"llama.cpp could not load the adapter {folder.name} onto {self.path.name}")
        return LlamaCppAdapter(handle, size)

    def release_adapter(self, adapter: LlamaCppAdapter) -> None:
        if self._applied is adapter:
            self._apply(None)
        self._llama.llama_adapter_lora_free(adapter.handle)

    def _apply(self, adapter: LlamaCppAdapter | None) -> None:
        if adapter is self._applied:
            return
        if adapter is None:
            self._llama.llama_set_adapters_lora(self._ctx, self._no_adapter, 0, self._scale)
        else:
            handles = (self._llama.llama_adapter_lora_p_ctypes * 1)(adapter.handle)
            self._llama.llama_set_adapters_lora(self._ctx, handles, 1, self._scale)
        self._applied = adapter

    # the cache ---------------------------------------------------------------------------------
    def reserve(self, slot: int, length: int) -> bool:
        """Whether the shared cache has room for `length` more tokens in `slot` (kept for it if so)."""
        others = sum(n for s, n in self._reserved.items() if s != slot)
        if others + length > self.capacity:
            return False
        self._reserved[slot] = length
        return True

    def free(self, slot: int) -> None:
        self._reserved.pop(slot, None)
        self._cached.pop(slot, None)
        self._llama.llama_memory_seq_rm(self._memory, slot, -1, -1)

    def _share_prefix(self, slot: int, ids: list[int], adapter: LlamaCppAdapter | None) -> int:
        """How many of ids' first tokens `slot` now shares with another sequence of the same
        adapter (the cells are shared, not copied); 0 when no sequence begins the same way."""
        best, source = 0, None
        for other, (other_adapter, tokens) in self._cached.items():
            if other == slot or other_adapter is not adapter:
                continue
            common = 0
            for a, b in zip(tokens, ids[:len(ids) - 1]):  # the last prompt token is always computed: its logits
                if a != b:
                    break
                common += 1
            if common > best:
                best, source = common, other
        if best < MIN_SHARED_PREFIX:
            return 0
        self._llama.llama_memory_seq_cp(self._memory, source, slot, 0, best)
        return best

    # forward -----------------------------------------------------------------------------------
    def prefill(self, slot: int, ids: list[int], adapter: LlamaCppAdapter | None, *, all_logits: bool = False) -> torch.Tensor:
        self._llama.llama_memory_seq_rm(self._memory, slot, -1, -1)
        self._apply(adapter)
        shared = 0 if all_logits else self._share_prefix(slot, ids, adapter)  # every logit wanted: all computed
        rows = []
        for start in range(shared, len(ids), PREFILL_CHUNK):
            chunk = ids[start:start + PREFILL_CHUNK]
            last = start + len(chunk) == len(ids)
            self._fill([(token, start + i, slot, all_logits or (last and i == len(chunk) - 1))
                        for i, token in enumerate(chunk)])
            self._decode()
            if all_logits or last:
                rows.append(self._logits(len(chunk) if all_logits else 1))
        self._cached[slot] = (adapter, list(ids))
        return torch.from_numpy(np.concatenate(rows))

    def decode(self, tokens: list[int], positions: list[int],
               adapters: list[tuple[LlamaCppAdapter | None, list[int]]]) -> torch.Tensor:
        """One step for the listed slots: one llama_decode per adapter (rows of the base together)."""
        logits = np.zeros((len(tokens), self.vocab), dtype=np.float32)
        # The adapter already applied goes first: each change makes llama.cpp plan its graph again.
        for adapter, rows in sorted(adapters, key=lambda group: group[0] is not self._applied):
            self._apply(adapter)
            self._fill([(tokens[row], positions[row], row, True) for row in rows])
            self._decode()
            logits[rows] = self._logits(len(rows))
            for row in rows:
                self._cached[row][1].append(tokens[row])
        return torch.from_numpy(logits)

    def _fill(self, items: list[tuple[int, int, int, bool]]) -> None:
        """The batch: (token, position, sequence, wants logits) per token."""
        batch = self._batch
        batch.n_tokens = len(items)
        for i, (token, position, sequence, wanted) in enumerate(items):
            batch.token[i], batch.pos[i], batch.logits[i] = token, position, wanted
            batch.seq_id[i][0], batch.n_seq_id[i] = sequence, 1

    def _decode(self) -> None:
        status = self._llama.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama.cpp could not decode ({'no room in the KV cache' if status == 1 else status})")

    def _logits(self, rows: int) -> np.ndarray:
        """A copy of the last decode's logits (rows x vocabulary: llama.cpp reuses its buffer)."""
        return np.ctypeslib.as_array(self._llama.llama_get_logits(self._ctx), shape=(rows, self.vocab)).copy()
