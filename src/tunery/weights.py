"""What a model runs on: the one answer to "which weights?". The models service decides it once
for a model name (a base model, a LoRA fine-tune or a full fine-tune); the worker (to continue
training from it) and the inference engine (to serve it) take it as given."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

WeightsKind = Literal["base", "lora", "full"]


@dataclass(frozen=True)
class Weights:
    kind: WeightsKind
    folder: Path  # the Hugging Face model folder to load: the base model's ("base", "lora") or the fine-tune's ("full")
    adapter: Path | None = None  # "lora": the PEFT adapter folder applied on top of `folder`

    def __post_init__(self) -> None:
        if (self.kind == "lora") != (self.adapter is not None):
            raise ValueError("a LoRA model has an adapter, and only a LoRA model has one")

    @property
    def fine_tuned(self) -> bool:
        return self.kind != "base"
