"""The generation engine. One copy of each base model stays in memory; LoRA adapters are loaded
into it by name (PEFT) and switched per request, so fine-tuned models share the base weights.
A fine-tuned model saved with full weights is loaded as a model of its own."""

from __future__ import annotations

import hashlib
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunery.data.render import render_generation_prompt

DEFAULT_MAX_TOKENS = 1024  # when a request names no limit (the context window still bounds it)


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


class ContextLengthExceeded(ValueError):
    def __init__(self, prompt_tokens: int, max_tokens: int, context: int):
        super().__init__(f"This model's maximum context length is {context} tokens. However, you requested "
                         f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} "
                         f"in the completion). Please reduce the length of the messages or completion.")


class Engine:
    def __init__(self, device: str = "auto"):
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self._lock = threading.Lock()  # one generation at a time per process, for now
        self._bases: dict[Path, Any] = {}  # base folder -> model (a PeftModel once adapters exist)
        self._tokenizers: dict[Path, Any] = {}
        self._adapters: dict[Path, set[str]] = {}  # base folder -> adapter names loaded into it

    def chat(self, base: Path, adapter: Path | None, messages: list[dict[str, Any]], params: SamplingParams) -> Generation:
        with self._lock:
            model, tokenizer, adapter_scope = self._model(base, adapter)
            prompt = render_generation_prompt(tokenizer, messages)
            with adapter_scope:
                return self._generate(model, tokenizer, prompt, params)

    def complete(self, base: Path, adapter: Path | None, prompt: str, params: SamplingParams) -> Generation:
        """Legacy completion: the raw prompt, tokenized as training tokenized prompts."""
        with self._lock:
            model, tokenizer, adapter_scope = self._model(base, adapter)
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            with adapter_scope:
                return self._generate(model, tokenizer, ids, params)

    # models ------------------------------------------------------------------------------------
    def _model(self, base: Path, adapter: Path | None):
        """The model, its tokenizer, and the context in which it runs as asked (the base model
        runs with any loaded adapters disabled)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if adapter is not None and not (adapter / "adapter_config.json").exists():
            base = adapter  # full fine-tuning: the folder holds a whole model
            adapter = None
        if base not in self._bases:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
            self._bases[base] = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(self.device).eval()
            self._tokenizers[base] = AutoTokenizer.from_pretrained(base)
        model = self._bases[base]
        if adapter is None:
            scope = model.disable_adapter() if base in self._adapters else nullcontext()
            return model, self._tokenizers[base], scope
        name = _adapter_name(adapter)
        loaded = self._adapters.setdefault(base, set())
        if name not in loaded:
            from peft import PeftModel

            if loaded:
                model.load_adapter(adapter, adapter_name=name)
            else:
                model = self._bases[base] = PeftModel.from_pretrained(model, adapter, adapter_name=name).eval()
            loaded.add(name)
        model.set_adapter(name)
        return model, self._tokenizers[base], nullcontext()

    # generation --------------------------------------------------------------------------------
    def _generate(self, model, tokenizer, prompt: list[int], params: SamplingParams) -> Generation:
        context = getattr(model.config, "max_position_embeddings", 2048)
        max_tokens = params.max_tokens or min(DEFAULT_MAX_TOKENS, context - len(prompt))
        if len(prompt) + max_tokens > context:
            raise ContextLengthExceeded(len(prompt), max_tokens, context)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        sampling = params.temperature > 0
        kwargs = dict(do_sample=True, temperature=params.temperature, top_p=params.top_p) if sampling else dict(do_sample=False)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
        input_ids = torch.tensor([prompt], device=self.device)
        with torch.inference_mode():
            output = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_tokens,
                                    pad_token_id=tokenizer.eos_token_id if tokenizer.pad_token_id is None
                                    else tokenizer.pad_token_id, top_k=None, **kwargs)
        new = output[0, len(prompt):].tolist()
        eos = tokenizer.eos_token_id
        ended = eos in new
        if ended:
            new = new[: new.index(eos)]
        text = tokenizer.decode(new, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in params.stop) if i != -1), default=-1)
        if cut != -1:
            text, ended = text[:cut], True
        return Generation(text, "stop" if ended else "length", len(prompt), len(new))


def _adapter_name(folder: Path) -> str:
    """A name for PEFT unique to the adapter's folder: folders' own names repeat (every job has a
    checkpoints/<job>/step-12), and PEFT names may not hold dots."""
    return "adapter_" + hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
