"""The generation engine: one thread decodes every request together (continuous batching).

Callers submit sequences (a tokenized prompt, sampling parameters, a model) and read what comes
back from a Stream, synchronously or with asyncio. Each step the engine thread prefills newly
admitted sequences, then runs one decode step per base model over all of that model's sequences,
whatever adapter each uses, and samples each row with its own parameters and random generator.

On a CPU, the models llama.cpp runs (llama, mistral, qwen2, qwen3) are
decoded by inference/llamacpp.py when llama-cpp-python is installed (TUNERY_CPU_BACKEND);
the batched torch decoder (decoder.py) serves them on CUDA and without it, and transformers
(generic.py) serves every other architecture.

Every organization shares the engine fairly (fairness.py): waiting sequences are admitted
round-robin by owner (the organization that asked), and when a decoder has no slot or cache room
left, a waiting owner takes a slot back from one holding more than one beyond its own (that
sequence waits again and later resumes from its prompt and what it had generated, computed again).
A sequence whose stream was closed (its client went away) leaves at the next step; close() ends
whatever is in flight with EngineClosed.

The models in memory (one copy of each base, fine-tuned ones in a least-recently-used cache) are
models.py's. The engine thread runs at a lower priority than the requests' threads (ENGINE_NICENESS).
Each decoder's KV cache is bounded by kv_cache_bytes (TUNERY_KV_CACHE_MB): the
context served is at most what it holds for one sequence. Text is detokenized incrementally; stop
sequences end a sequence and are never sent, even in part, while streaming."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sys
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunery.devices import attention_implementation, resolve_device, serving_dtype, weights_dtype
from tunery.inference import fairness, llamacpp
from tunery.inference.decoder import KV_CACHE_BYTES, Decoder, kv_bytes_per_token, serving_context, supports
from tunery.inference.generic import GenericDecoder, runs
from tunery.inference.llamacpp import LlamaCppDecoder
from tunery.inference.models import AnyAdapter, AnyDecoder, LoadedModels, Model
from tunery.inference.text import first_stop, held_back, token_text
from tunery.inference.types import (
    ContextLengthExceeded,
    Delta,
    EngineClosed,
    Finished,
    RequestTooLarge,
    SamplingParams,
    Stream,
    TokenLogprob,
    UnsupportedModel,
)
from tunery.export import ExportError
from tunery.loading import HF_LOADING
from tunery.weights import Weights

log = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS = 1024  # when a request names no limit (the context window still bounds it)
MAX_BATCH = 32  # sequences decoded together per base model; more wait for a free slot
# What one request may ask of the engine every organization shares: completions (prompts x n), and
# tokens (each completion's prompt and the most it may generate).
MAX_SEQUENCES_PER_REQUEST = 128
MAX_TOKENS_PER_REQUEST = 1 << 18
CPU_BACKENDS = ("auto", "llamacpp", "torch")
# The engine thread's niceness over the process's own: answering a list or a retrieve takes a few
# milliseconds of CPU, decoding takes all there is. Under bench/load.py on a 2-core machine (50
# clients, 11 chats/s filling both cores with llama.cpp's threads), list/retrieve p99 went from
# 420 to 267 ms with the decoder at +5, for 9% fewer chats.
ENGINE_NICENESS = 5


@dataclass
class _Sequence:
    index: int
    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    stream: Stream
    weights: Weights
    generator: torch.Generator
    owner: str = ""  # who asked (an organization): admission is fair between owners
    slot: int = -1
    generated: list[int] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    sent: int = 0  # characters of the text already sent
    pending: list[TokenLogprob] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] = field(default_factory=list)
    model: Model | None = None


def _yield_to_requests() -> None:
    """Lower the calling thread's priority by ENGINE_NICENESS (Linux keeps a niceness per thread, and
    the threads llama.cpp's OpenMP starts from this one inherit it); elsewhere, nothing."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # a niceness already at its bound stays there
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + ENGINE_NICENESS))


class Engine:
    def __init__(self, device: str = "auto", dtype: str = "auto", cache_bytes: int = 2 << 30, attention: str = "auto",
                 cpu_backend: str = "auto", gguf_type: str = "auto", gguf_dir: Path | None = None,
                 kv_cache_bytes: int = KV_CACHE_BYTES):
        """cache_bytes: the fine-tuned weights kept in memory; cpu_backend: what decodes on a CPU
        ("auto": llama.cpp when installed, else torch); gguf_type and gguf_dir: llama.cpp's weights
        and where their conversions are kept (a temporary folder when none is given);
        kv_cache_bytes: the most each decoder's KV cache holds (the transformers path excepted)."""
        if cpu_backend not in CPU_BACKENDS:
            raise ValueError(f"TUNERY_CPU_BACKEND={cpu_backend!r}: use one of {', '.join(CPU_BACKENDS)}.")
        if cpu_backend == "llamacpp" and not llamacpp.installed():
            raise ValueError("TUNERY_CPU_BACKEND=llamacpp: llama-cpp-python is not installed (pip install -e '.[cpu]').")
        if gguf_type not in llamacpp.GGUF_TYPES:
            raise ValueError(f"TUNERY_GGUF_TYPE={gguf_type!r}: use one of {', '.join(llamacpp.GGUF_TYPES)}.")
        self.device = resolve_device(device)
        self.dtype = serving_dtype(dtype, self.device)
        self.weights_dtype = weights_dtype(dtype, self.device, self.dtype)  # the batched decoder's matrices
        self.attention = attention_implementation(attention, self.device, self.dtype)
        self.cache_bytes, self.kv_cache_bytes = cache_bytes, kv_cache_bytes
        self.cpu_backend, self.gguf_type = cpu_backend, gguf_type
        self._scratch = None if gguf_dir is not None else tempfile.TemporaryDirectory(prefix="tunery-gguf-")
        self.gguf_dir = gguf_dir if gguf_dir is not None else Path(self._scratch.name)
        self.models = LoadedModels(self._new_decoder, self.tokenizer, cache_bytes)
        self._tokenizers: dict[Path, Any] = {}
        self._configs: dict[Path, dict[str, Any]] = {}
        self._waiting: list[_Sequence] = []
        self._forgotten: list[Path] = []
        self._active: list[_Sequence] = []
        self._unfinished = 0  # sequences submitted and not ended: counted apart, as they move between lists
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tunery-engine", daemon=True)
        self._thread.start()

    # what callers use --------------------------------------------------------------------------
    def tokenizer(self, weights: Weights):
        """The model's tokenizer, loaded once; requests' threads and the engine thread share it
        (they only encode and decode, which leave it unchanged)."""
        folder = weights.folder
        with HF_LOADING:  # transformers' first import and a tokenizer's load are not thread-safe
            if folder not in self._tokenizers:
                from transformers import AutoTokenizer

                self._tokenizers[folder] = AutoTokenizer.from_pretrained(folder)
            return self._tokenizers[folder]

    def context_length(self, weights: Weights) -> int:
        """The longest sequence served: the model's context, or what its KV cache holds for one
        sequence when that is less (the transformers path's caches are its own)."""
        config = self._config(weights.folder)
        if self._on_llamacpp(config):  # its KV cache is allocated once: a longer context is served shorter
            return min(serving_context(config), llamacpp.kv_tokens(config, MAX_BATCH, self.kv_cache_bytes))
        if supports(config):
            return min(serving_context(config), self.kv_cache_bytes // kv_bytes_per_token(config, self.dtype.itemsize))
        return serving_context(config)

    def _on_llamacpp(self, config: dict[str, Any]) -> bool:
        return self.device.type == "cpu" and self.cpu_backend != "torch" and llamacpp.serves(config)

    def _config(self, folder: Path) -> dict[str, Any]:
        """A model folder's config.json, read once (every request needs it)."""
        with HF_LOADING:
            if folder not in self._configs:
                self._configs[folder] = json.loads((folder / "config.json").read_text())
            return self._configs[folder]

    def submit(self, weights: Weights, prompts: list[list[int]], params: SamplingParams, n: int = 1,
               owner: str = "") -> Stream:
        """Generate n completions of each prompt (indexes prompt * n + choice) for `owner` (the
        organization asking: owners share the engine fairly). Raises ContextLengthExceeded,
        RequestTooLarge, UnsupportedModel or EngineClosed before anything runs."""
        if not runs(self._config(weights.folder)):
            raise UnsupportedModel(f"{weights.folder.name}: transformers has no causal language model for "
                                   f"model_type {self._config(weights.folder).get('model_type')!r}")
        context = self.context_length(weights)
        if len(prompts) * n > MAX_SEQUENCES_PER_REQUEST:
            raise RequestTooLarge(f"{len(prompts)} prompt(s) x n={n} asks for {len(prompts) * n} completions; one "
                                  f"request may ask for at most {MAX_SEQUENCES_PER_REQUEST}.",
                                  "n" if n > 1 else "prompt")
        tokens = n * sum(len(p) + (params.max_tokens or max(1, min(DEFAULT_MAX_TOKENS, context - len(p)))) for p in prompts)
        if tokens > MAX_TOKENS_PER_REQUEST:
            raise RequestTooLarge(f"This request asks for up to {tokens} prompt and completion tokens over its "
                                  f"{len(prompts) * n} completions; one request may ask for at most "
                                  f"{MAX_TOKENS_PER_REQUEST}: lower max_tokens or n.", "max_tokens")
        sequences, stream = [], Stream(len(prompts) * n)
        for p, prompt in enumerate(prompts):
            max_tokens = params.max_tokens or max(1, min(DEFAULT_MAX_TOKENS, context - len(prompt)))
            if len(prompt) + max_tokens > context:
                raise ContextLengthExceeded(len(prompt), max_tokens, context,
                                            by_kv_cache=context < serving_context(self._config(weights.folder)))
            for choice in range(n):
                generator = torch.Generator()
                # Same seed, same samples; each choice its own stream of them.
                generator.manual_seed((params.seed * 1_000_003 + choice) % 2**63 if params.seed is not None
                                      else secrets.randbits(63))
                sequences.append(_Sequence(p * n + choice, prompt, params, max_tokens, stream, weights, generator, owner))
        with self._wake:
            if self._closed:
                raise EngineClosed()
            self._waiting.extend(sequences)
            self._unfinished += len(sequences)
            self._wake.notify()
        return stream

    def forget(self, folder: Path) -> None:
        """A deleted model: its weights leave memory (once sequences already using it finish)."""
        with self._wake:
            self._forgotten.append(folder)
            self._wake.notify()

    def stop(self) -> None:
        """Stop at the end of the current step without waiting for it (a signal handler may call
        this): what is in flight or waiting ends with EngineClosed, later submissions are refused."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    def close(self) -> None:
        """Stop, and wait for the engine thread to end (its step, and freeing llama.cpp's memory)."""
        self.stop()
        self._thread.join(timeout=60)

    def busy(self) -> int:
        """Sequences being decoded or waiting to be."""
        return self._unfinished

    # the engine thread -------------------------------------------------------------------------
    def _run(self) -> None:
        _yield_to_requests()
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._active and not self._forgotten:
                    self._wake.wait()
                waiting, self._waiting = self._waiting, []
                if self._closed:
                    return self._shut_down(waiting)
                forgotten, self._forgotten = self._forgotten, []
            if forgotten:
                self.models.forget(forgotten)
            for seq in [s for s in self._active if s.stream.cancelled]:  # their callers went away: no step more
                log.info("generation stopped after %d tokens: its caller went away", len(seq.generated))
                self._end(seq, None)
            waiting = self._admit(waiting)
            if waiting:
                with self._wake:
                    self._waiting[:0] = waiting  # first in the queue, in their order
            by_decoder: dict[int, list[_Sequence]] = {}
            for seq in self._active:
                by_decoder.setdefault(id(seq.model.decoder), []).append(seq)
            for seqs in by_decoder.values():
                self._step(seqs[0].model.decoder, seqs)

    def _shut_down(self, waiting: list[_Sequence]) -> None:
        """The engine closes: every sequence in flight or waiting ends with EngineClosed, and
        llama.cpp's memory (its own) is freed here rather than at exit."""
        for seq in [*self._active, *waiting]:
            self._end(seq, None if seq.stream.cancelled else EngineClosed())
        self.models.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def _admit(self, waiting: list[_Sequence]) -> list[_Sequence]:
        """Start the waiting sequences that fit, in fair order; returns those that wait still
        (sequences that gave their slot back first), in their order."""
        still, taken_back, full = [], [], set()
        for seq in fairness.admission_order(waiting, Counter(s.owner for s in self._active)):
            if not self._start(seq, full, taken_back):
                still.append(seq)
        return taken_back + still

    def _start(self, seq: _Sequence, full: set[int], taken_back: list[_Sequence]) -> bool:
        """Prefill seq (one taken back earlier: its prompt and what it had generated) and sample its
        next token; False when it must wait: its decoder has no slot or cache room for it, even
        after taking slots back from owners holding more than one beyond seq's owner (appended to
        taken_back), or an earlier sequence waits for that decoder this round (in `full`)."""
        try:
            if seq.stream.cancelled:
                self._end(seq, None)
                return True
            model = self.models.load(seq.weights)
            decoder = model.decoder
            if id(decoder) in full:
                return False
            model.in_use += 1
            while not self._place(seq, decoder):
                running = [s for s in self._active if s.model.decoder is decoder]
                victim = fairness.victim(seq, running)
                if victim is None:
                    model.in_use -= 1
                    if not running:  # alone, it still does not fit (context_length keeps this from happening)
                        raise RequestTooLarge(f"{len(seq.prompt) + seq.max_tokens} tokens do not fit in this model's "
                                              f"KV cache of {self.kv_cache_bytes} bytes (TUNERY_KV_CACHE_MB).",
                                              "max_tokens")
                    full.add(id(decoder))
                    return False
                self._take_back(victim)
                taken_back.append(victim)
            seq.model = model
            echo = seq.params.prompt_logprobs and seq.params.logprobs is not None and not seq.generated
            logits = decoder.prefill(seq.slot, seq.prompt + seq.generated, model.adapter, all_logits=echo)
            if echo:
                seq.prompt_logprobs = [None] + [self._logprob(seq, logits[i], seq.prompt[i + 1])
                                                for i in range(len(seq.prompt) - 1)]
            self._active.append(seq)
            self._advance(seq, logits[-1])
        except Exception as exc:  # a fault loading or running this model: its caller hears of it
            if not isinstance(exc, RequestTooLarge):
                log.exception("generation failed")
            self._end(seq, exc)
        return True

    def _place(self, seq: _Sequence, decoder: AnyDecoder) -> bool:
        """A free slot of the decoder for seq, with room reserved in its cache; False if none."""
        used = {s.slot for s in self._active if s.model.decoder is decoder}
        slot = next(i for i in range(MAX_BATCH + 1) if i not in used)
        if slot == MAX_BATCH or not decoder.reserve(slot, len(seq.prompt) + seq.max_tokens):
            return False
        seq.slot = slot
        return True

    def _take_back(self, seq: _Sequence) -> None:
        """seq leaves its slot for another owner's sequence; it waits again, keeping what it generated."""
        log.info("a sequence of %s waits again after %d tokens: another organization's turn", seq.owner or "-",
                 len(seq.generated))
        self._active.remove(seq)
        seq.model.decoder.free(seq.slot)
        seq.model.in_use -= 1
        seq.model, seq.slot = None, -1

    def _step(self, decoder: AnyDecoder, seqs: list[_Sequence]) -> None:
        width = max(s.slot for s in seqs) + 1
        tokens, positions = [0] * width, [0] * width
        groups: dict[int, tuple[AnyAdapter | None, list[int]]] = {}
        for seq in seqs:
            tokens[seq.slot] = seq.generated[-1]
            positions[seq.slot] = len(seq.prompt) + len(seq.generated) - 1
            groups.setdefault(id(seq.model.adapter), (seq.model.adapter, []))[1].append(seq.slot)
        try:
            logits = decoder.decode(tokens, positions, list(groups.values()))
        except Exception as exc:
            log.exception("decoding failed")
            for seq in seqs:
                self._end(seq, exc)
            return
        for seq in seqs:
            self._advance(seq, logits[seq.slot])

    def _advance(self, seq: _Sequence, logits: torch.Tensor) -> None:
        """Sample the next token of seq, send what text is final, and end it when it is done."""
        if seq.stream.cancelled:
            return self._end(seq, None)
        token = self._sample(seq, logits)
        tokenizer = seq.model.tokenizer
        if token in seq.model.end_tokens:
            return self._finish(seq, "stop")
        seq.generated.append(token)
        seq.counts[token] = seq.counts.get(token, 0) + 1
        if seq.params.logprobs is not None:
            seq.pending.append(self._logprob(seq, logits, token))
        text = tokenizer.decode(seq.generated, skip_special_tokens=True)
        cut = first_stop(text, seq.params.stop, seq.sent)
        if cut is not None:
            return self._finish(seq, "stop", text[:cut])
        if len(seq.generated) >= seq.max_tokens:
            return self._finish(seq, "length", text)
        final = len(text) - held_back(text, seq.params.stop)
        if final > seq.sent and not text[:final].endswith("\ufffd"):  # a character still being spelt out waits
            seq.stream.put(Delta(seq.index, text[seq.sent:final], seq.pending))
            seq.logprobs.extend(seq.pending)
            seq.sent, seq.pending = final, []

    def _sample(self, seq: _Sequence, logits: torch.Tensor) -> int:
        params = seq.params
        if seq.counts and (params.presence_penalty or params.frequency_penalty):
            ids = torch.tensor(list(seq.counts))
            counts = torch.tensor(list(seq.counts.values()), dtype=logits.dtype)
            logits = logits.clone()
            logits[ids] -= params.presence_penalty + params.frequency_penalty * counts
        if params.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(0) - sorted_probs < params.top_p  # the smallest set reaching top_p
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
        # Inverse-CDF sampling: one random number (torch.multinomial costs ~10x more at this vocabulary size).
        cdf = probs.cumsum(0, dtype=torch.float64)
        point = torch.rand((), generator=seq.generator, dtype=torch.float64) * cdf[-1]
        return min(int(torch.searchsorted(cdf, point, right=True)), len(cdf) - 1)

    def _logprob(self, seq: _Sequence, logits: torch.Tensor, token: int) -> TokenLogprob:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        tokenizer = seq.model.tokenizer
        top = []
        if seq.params.logprobs:
            values, ids = logprobs.topk(seq.params.logprobs)
            for value, candidate in zip(values.tolist(), ids.tolist()):
                candidate_text, candidate_bytes = token_text(tokenizer, candidate)
                top.append((candidate_text, value, candidate_bytes))
        text, raw = token_text(tokenizer, token)
        return TokenLogprob(text, float(logprobs[token]), raw, top)

    def _finish(self, seq: _Sequence, reason: str, text: str | None = None) -> None:
        """text: the completion as it ends (stop sequence cut off); None when it ended on an
        end token, after a step whose text had no stop sequence."""
        if text is None:
            text = seq.model.tokenizer.decode(seq.generated, skip_special_tokens=True)
        if len(text) > seq.sent:
            seq.stream.put(Delta(seq.index, text[seq.sent:], seq.pending))
        seq.logprobs.extend(seq.pending)
        seq.stream.put(Finished(seq.index, reason, text, len(seq.prompt), len(seq.generated),
                                seq.logprobs, seq.prompt_logprobs))
        self._end(seq, None)

    def _end(self, seq: _Sequence, error: BaseException | None) -> None:
        if seq.model is not None:  # its room freed before it leaves the count busy() gives
            seq.model.in_use -= 1
            if seq.slot >= 0:
                seq.model.decoder.free(seq.slot)
            seq.model = None
        if seq in self._active:
            self._active.remove(seq)
        with self._wake:
            self._unfinished -= 1
        stream = seq.stream
        if error is not None:
            stream.put(error)
            stream.remaining = 0
            stream.cancelled = True  # its other sequences stop too
            return
        stream.remaining -= 1
        if stream.remaining == 0:
            stream.put(None)

    # models ------------------------------------------------------------------------------------
    def _new_decoder(self, folder: Path) -> AnyDecoder:
        if self._on_llamacpp(self._config(folder)):
            try:
                return LlamaCppDecoder(folder, gguf_dir=self.gguf_dir, gguf_type=self.gguf_type, sequences=MAX_BATCH,
                                       kv_cache_bytes=self.kv_cache_bytes)
            except (ExportError, RuntimeError) as exc:  # a RoPE scaling GGUF cannot describe, a failed load
                log.warning("%s is served by torch, not llama.cpp: %s", folder.name, exc)
        return new_decoder(folder, dtype=self.dtype, device=self.device, attention=self.attention,
                           weights_dtype=self.weights_dtype, kv_cache_bytes=self.kv_cache_bytes)

    def backend(self, weights: Weights) -> str:
        """What decodes this model (once it has been loaded), in words."""
        model = self.models.loaded(weights)
        if model is None:
            return "not loaded"
        decoder = model.decoder
        if isinstance(decoder, LlamaCppDecoder):
            return f"llama.cpp on {decoder.path.name} ({decoder.weight_bytes / 2**20:.0f} MiB with its KV cache)"
        if isinstance(decoder, Decoder):
            return f"batched torch decoder ({str(self.dtype).removeprefix('torch.')}, weights {str(self.weights_dtype).removeprefix('torch.')})"
        return "transformers (general path)"

    def cached(self) -> list[Path]:
        """The fine-tuned models in memory (adapter or full model folders), least recently used first."""
        return list(self.models.fine_tuned)


def new_decoder(folder: Path, *, dtype: torch.dtype, device: torch.device, attention: str | None = None,
                weights_dtype: torch.dtype | None = None, kv_cache_bytes: int = KV_CACHE_BYTES) -> Decoder | GenericDecoder:
    """The torch decoders: the compact batched decoder for the architectures it runs (its own attention, its KV
    cache within kv_cache_bytes), transformers for any other (with the attention implementation
    devices.attention_implementation chose)."""
    config = json.loads((folder / "config.json").read_text())
    if supports(config):
        return Decoder(folder, dtype=dtype, device=device, weights_dtype=weights_dtype, kv_cache_bytes=kv_cache_bytes)
    return GenericDecoder(folder, dtype=dtype, device=device, attention=attention)
