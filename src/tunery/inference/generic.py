"""The general decoder: any causal language model transformers can run (Gemma, Phi, GPT-2, ...),
served through transformers and PEFT, so that no model that trained is refused. It has the
interface of decoder.Decoder, but runs each sequence on its own (its own transformers cache, its
own adapter switched on) rather than every sequence in one batch: slower, and exact."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunery.inference.types import UnsupportedModel


def runs(config: dict) -> bool:
    """Whether transformers has a causal language model class for this config."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return config.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


class GenericAdapter:
    """A LoRA adapter loaded into the base model's PEFT wrapper under its own name."""

    def __init__(self, name: str, bytes_: int):
        self.name, self.bytes = name, bytes_


class GenericDecoder:
    def __init__(self, folder: Path, *, dtype: torch.dtype, device: torch.device, attention: str | None = None):
        from transformers import AutoModelForCausalLM

        config = json.loads((folder / "config.json").read_text())
        if not runs(config):
            raise UnsupportedModel(f"{folder.name}: transformers has no causal language model for "
                                   f"model_type {config.get('model_type')!r}")
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=attention).to(device).eval()
        self.device = device
        self.context = getattr(self.model.config, "max_position_embeddings", 2048)
        self.weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.peft = None  # the PEFT wrapper, once an adapter is loaded
        self.caches: dict[int, object] = {}  # slot -> that sequence's transformers cache
        self._names = 0

    # adapters ----------------------------------------------------------------------------------
    def load_adapter(self, folder: Path) -> GenericAdapter:
        from peft import PeftModel

        self._names += 1
        name = f"adapter-{self._names}"
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.model, folder, adapter_name=name).eval()
        else:
            self.peft.load_adapter(folder, adapter_name=name)
        lora = [p for key, p in self.peft.named_parameters() if f".{name}." in key]
        return GenericAdapter(name, sum(p.numel() * p.element_size() for p in lora))

    def release_adapter(self, adapter: GenericAdapter) -> None:
        self.peft.delete_adapter(adapter.name)
        if not self.peft.peft_config:  # the last one: PEFT cannot even disable adapters it no longer has
            self.model = self.peft.unload()
            self.peft = None

    # the cache ---------------------------------------------------------------------------------
    def reserve(self, slot: int, length: int) -> bool:
        """Nothing to reserve: each sequence's cache grows as transformers grows it."""
        return True

    def free(self, slot: int) -> None:
        self.caches.pop(slot, None)

    # forward -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, slot: int, ids: list[int], adapter: GenericAdapter | None, *, all_logits: bool = False) -> torch.Tensor:
        out = self._forward(adapter, torch.tensor([ids], device=self.device), None)
        self.caches[slot] = out.past_key_values
        return (out.logits[0] if all_logits else out.logits[0, -1:]).float()

    @torch.inference_mode()
    def decode(self, tokens: list[int], positions: list[int],
               adapters: list[tuple[GenericAdapter | None, list[int]]]) -> torch.Tensor:
        """One step for the listed slots, each after its own cache (positions follow from it)."""
        logits = None
        for adapter, rows in adapters:
            for row in rows:
                out = self._forward(adapter, torch.tensor([[tokens[row]]], device=self.device), self.caches[row])
                self.caches[row] = out.past_key_values
                if logits is None:
                    logits = torch.zeros(len(tokens), out.logits.shape[-1])
                logits[row] = out.logits[0, -1].float()
        return logits

    def _forward(self, adapter: GenericAdapter | None, ids: torch.Tensor, cache):
        if self.peft is None:
            return self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        if adapter is None:
            with self.peft.disable_adapter():
                return self.peft(input_ids=ids, past_key_values=cache, use_cache=True)
        self.peft.set_adapter(adapter.name)
        return self.peft(input_ids=ids, past_key_values=cache, use_cache=True)
