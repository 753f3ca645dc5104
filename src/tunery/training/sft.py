"""The supervised fine-tuning recipe, LoRA or full, read top to bottom: setup, train, save,
cleanup. It knows nothing of jobs, HTTP or SQL: it takes examples and a typed config, reports
each optimizer step through a callback (which may ask it to stop), and writes its artefacts to
a folder it is given."""

from __future__ import annotations

import gc
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunery.data.render import DEFAULT_PROMPT_LOSS_WEIGHT, IGNORE, Rendered, render_example

MAX_SEQUENCE_TOKENS = 4096  # longer examples are truncated (keeping the beginning)
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CONFIG_FILE = "tunery_training.json"  # the resolved config and final metrics, beside the weights


@dataclass
class SFTConfig:
    base_model: str  # a Hugging Face model folder
    n_epochs: int  # passes over the training examples
    batch_size: int  # examples per optimizer step
    learning_rate: float  # peak learning rate (after warm-up)
    training_type: str = "lora"  # "lora" (adapter on frozen weights) or "full" (every weight)
    seed: int = 0  # shuffling, LoRA initialisation and dropout
    lora_rank: int = 16  # rank of each LoRA update matrix
    lora_alpha: int = 32  # LoRA scale is alpha / rank
    lora_dropout: float = 0.0  # small data sets gain little from it and it slows CPU steps
    warmup_fraction: float = 0.03  # of all steps, linear warm-up before a linear decay to zero
    weight_decay: float = 0.0
    prompt_loss_weight: float = DEFAULT_PROMPT_LOSS_WEIGHT  # legacy prompt/completion data: loss weight of prompt tokens
    device: str = "auto"  # "auto" picks CUDA (bf16) when present, else CPU (float32)

    def __post_init__(self) -> None:
        for name in ("n_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.training_type not in ("lora", "full"):
            raise ValueError("training_type must be 'lora' or 'full'")


@dataclass
class StepMetrics:
    step: int
    total_steps: int
    train_loss: float
    train_mean_token_accuracy: float


@dataclass
class SFTResult:
    steps: int
    trained_tokens: int  # every token of every example, times the epochs run (what is billed)
    stopped: bool  # the callback asked to stop before the end
    history: list[StepMetrics] = field(default_factory=list)


OnStep = Callable[[StepMetrics], bool]  # returns False to stop training


class SFTRecipe:
    def __init__(self, config: SFTConfig):
        self.config = config

    # setup -----------------------------------------------------------------------------------
    def setup(self, examples: list[dict[str, Any]]) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = self.config
        _seed_everything(cfg.seed)
        self.device = _pick_device(cfg.device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
        model = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=dtype)
        max_length = min(MAX_SEQUENCE_TOKENS, getattr(model.config, "max_position_embeddings", MAX_SEQUENCE_TOKENS))
        self.examples: list[Rendered] = [
            render_example(self.tokenizer, e, max_length=max_length, prompt_loss_weight=cfg.prompt_loss_weight)
            for e in examples
        ]
        if cfg.training_type == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=[m for m in LORA_TARGET_MODULES if _has_module(model, m)], task_type="CAUSAL_LM",
            ))
        self.model = model.to(self.device)
        self.model.config.use_cache = False
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.steps_per_epoch = math.ceil(len(self.examples) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.n_epochs
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        warmup = max(1, int(self.total_steps * cfg.warmup_fraction))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min((s + 1) / warmup, max(0.0, (self.total_steps - s) / max(1, self.total_steps - warmup))),
        )

    # train -----------------------------------------------------------------------------------
    def train(self, on_step: OnStep) -> SFTResult:
        cfg = self.config
        result = SFTResult(steps=0, trained_tokens=0, stopped=False)
        order = random.Random(cfg.seed)
        self.model.train()
        for _epoch in range(cfg.n_epochs):
            indices = list(range(len(self.examples)))
            order.shuffle(indices)
            for start in range(0, len(indices), cfg.batch_size):
                batch = [self.examples[i] for i in indices[start:start + cfg.batch_size]]
                loss, accuracy = self._step(batch)
                result.steps += 1
                result.trained_tokens += sum(len(e.input_ids) for e in batch)
                metrics = StepMetrics(result.steps, self.total_steps, loss, accuracy)
                result.history.append(metrics)
                if not on_step(metrics):
                    result.stopped = True
                    return result
        return result

    def _step(self, batch: list[Rendered]) -> tuple[float, float]:
        input_ids, attention_mask, labels, weights = self._collate(batch)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        # Position t predicts token t+1: compare logits[:, :-1] with labels[:, 1:].
        targets, weights = labels[:, 1:], weights[:, 1:]
        trained = targets != IGNORE
        picked, wanted, weight = logits[:, :-1][trained].float(), targets[trained], weights[trained]
        token_losses = torch.nn.functional.cross_entropy(picked, wanted, reduction="none")
        loss = (token_losses * weight).sum() / weight.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        full = weight == 1.0  # accuracy on the tokens trained at full weight, as the guide reports it
        accuracy = (picked.argmax(-1)[full] == wanted[full]).float().mean()
        return loss.item(), accuracy.item()

    def _collate(self, batch: list[Rendered]) -> tuple[torch.Tensor, ...]:
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        weights = torch.zeros((len(batch), width), dtype=torch.float32)
        for row, example in enumerate(batch):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(example.labels)
            weights[row, :n] = torch.tensor(example.weights) if example.weights is not None else 1.0
        return ids.to(self.device), mask.to(self.device), labels.to(self.device), weights.to(self.device)

    # save ------------------------------------------------------------------------------------
    def save(self, folder: Path, result: SFTResult) -> None:
        """Adapter (LoRA) or full weights, the tokenizer, and the resolved config with metrics."""
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        last = result.history[-1] if result.history else None
        (folder / CONFIG_FILE).write_text(json.dumps({
            "config": asdict(self.config), "steps": result.steps, "trained_tokens": result.trained_tokens,
            "final_metrics": asdict(last) if last else None,
        }, indent=2))

    # cleanup ---------------------------------------------------------------------------------
    def cleanup(self) -> None:
        for name in ("model", "optimizer", "scheduler", "examples"):
            self.__dict__.pop(name, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _has_module(model, suffix: str) -> bool:
    return any(name.endswith(suffix) for name, _ in model.named_modules())
