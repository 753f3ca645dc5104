"""The models in the engine's memory, used from the engine thread only: one copy of each base
model, kept; LoRA adapters on a base and fully fine-tuned models loaded on first use and kept in a
least-recently-used cache bounded by a memory budget, where a model in use is never evicted.

Loaded models live long: their objects are kept out of the garbage collector's sight (gc.freeze,
as the server's own are at start, api/app.py), so that a full collection does not walk them with
every request in the process stopped meanwhile."""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunery.inference.decoder import Adapter, Decoder
from tunery.inference.generic import GenericAdapter, GenericDecoder
from tunery.inference.llamacpp import LlamaCppAdapter, LlamaCppDecoder
from tunery.inference.text import end_tokens
from tunery.weights import Weights

AnyDecoder = Decoder | GenericDecoder | LlamaCppDecoder
AnyAdapter = Adapter | GenericAdapter | LlamaCppAdapter


class Model:
    """A loaded model: a base decoder with its tokenizer, or an adapter on a base."""

    def __init__(self, decoder: AnyDecoder, tokenizer, adapter: AnyAdapter | None = None):
        self.decoder, self.tokenizer, self.adapter = decoder, tokenizer, adapter
        self.end_tokens = end_tokens(tokenizer)
        self.in_use = 0  # sequences decoding with it


class LoadedModels:
    def __init__(self, new_decoder: Callable[[Path], AnyDecoder], tokenizer: Callable[[Weights], Any], cache_bytes: int):
        """new_decoder: a base or full model folder's decoder; tokenizer: a model's tokenizer;
        cache_bytes: what the fine-tuned models kept may weigh together."""
        self._new_decoder, self._tokenizer, self.cache_bytes = new_decoder, tokenizer, cache_bytes
        self.bases: dict[Path, Model] = {}
        self.fine_tuned: OrderedDict[Path, Model] = OrderedDict()  # adapter and full model folders, LRU first
        self._dropped = False  # a model was dropped since objects were last frozen

    def load(self, weights: Weights) -> Model:
        """The model of a sequence: a base (kept), or a LoRA adapter on one or a fully fine-tuned
        model (both cached, least recently used first)."""
        folder = weights.folder
        key = weights.adapter or folder
        if key in self.fine_tuned:
            self.fine_tuned.move_to_end(key)
            return self.fine_tuned[key]
        if weights.kind == "full":
            model = Model(self._new_decoder(folder), self._tokenizer(weights))
        else:
            if folder not in self.bases:
                self.bases[folder] = Model(self._new_decoder(folder), self._tokenizer(weights))
                self._freeze_long_lived()
            if weights.kind == "base":
                return self.bases[folder]
            base = self.bases[folder]
            model = Model(base.decoder, base.tokenizer, base.decoder.load_adapter(weights.adapter))
        self.fine_tuned[key] = model
        self._evict()
        self._freeze_long_lived()
        return model

    def loaded(self, weights: Weights) -> Model | None:
        return self.bases.get(weights.folder) if weights.kind == "base" else self.fine_tuned.get(weights.adapter or weights.folder)

    def forget(self, folders: list[Path]) -> None:
        """Deleted models leave memory; one still in use goes with the next eviction."""
        for folder in folders:
            if folder in self.fine_tuned and self.fine_tuned[folder].in_use == 0:
                self._drop(self.fine_tuned.pop(folder))
        self._freeze_long_lived()

    def close(self) -> None:
        """llama.cpp's memory (its own) is freed now rather than at exit."""
        for model in [*self.bases.values(), *self.fine_tuned.values()]:
            if isinstance(model.decoder, LlamaCppDecoder):
                model.decoder.close()

    def _evict(self) -> None:
        """Least recently used models go, never one in use, until the cache fits its budget."""
        def size(model: Model) -> int:
            return model.adapter.bytes if model.adapter is not None else model.decoder.weight_bytes

        for key in list(self.fine_tuned)[:-1]:  # the newest stays, whatever its size
            if sum(size(m) for m in self.fine_tuned.values()) <= self.cache_bytes:
                break
            if self.fine_tuned[key].in_use == 0:
                self._drop(self.fine_tuned.pop(key))

    def _drop(self, model: Model) -> None:
        self._dropped = True
        if model.adapter is not None:
            model.decoder.release_adapter(model.adapter)
        elif isinstance(model.decoder, LlamaCppDecoder):  # a fully fine-tuned model: llama.cpp's memory is its own
            model.decoder.close()

    def _freeze_long_lived(self) -> None:
        """Once a model was dropped, one collection first takes what it left in cycles."""
        if self._dropped:
            gc.unfreeze()
            gc.collect()
            self._dropped = False
        gc.freeze()
