"""The supervised fine-tuning recipe, LoRA or full, read top to bottom: setup, train, evaluate,
save_checkpoint, cleanup. It knows nothing of jobs, HTTP or SQL: it takes examples and a typed
config, reports each optimizer step and each epoch's end through callbacks (on_step may ask it
to stop), and writes checkpoints to folders it is given.

Speed comes from doing no useless work: a batch is packed into rows without padding between
examples (attention stays inside each example), and the vocabulary projection and the loss are
computed only at the positions that carry loss."""

from __future__ import annotations

import gc
import json
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunery.data.render import DEFAULT_PROMPT_LOSS_WEIGHT, IGNORE, Rendered, render_example
from tunery.devices import attention_implementation, resolve_device, training_dtype
from tunery.training.batching import Batch, pack, row_tokens
from tunery.training.checkpoints import TRAINER_SHARDS, TRAINER_STATE, load_optimizer_shards, write_manifest

MAX_SEQUENCE_TOKENS = 4096  # longer examples are truncated (keeping the beginning)
LORA_TARGET_MODULES = "all-linear"  # every linear layer but the output head, whatever the architecture names them
CONFIG_FILE = "tunery_training.json"  # the resolved config and metrics, beside the weights
EVALUATIONS_PER_RUN = 20  # validation mini-batches spread over the run when eval_every is 0


@dataclass
class SFTConfig:
    base_model: str  # a Hugging Face model folder (a base model, or a fully fine-tuned one)
    n_epochs: int  # passes over the training examples
    batch_size: int  # examples per optimizer step
    learning_rate: float  # peak learning rate (after warm-up)
    training_type: str = "lora"  # "lora" (adapter on frozen weights) or "full" (every weight)
    init_adapter: str | None = None  # continue from this LoRA adapter (a fine-tuned model's folder)
    resume_from: str | None = None  # a checkpoint folder with trainer state: go on from where it stopped
    seed: int = 0  # shuffling, LoRA initialisation and dropout
    lora_rank: int = 16  # rank of each LoRA update matrix
    lora_alpha: int = 32  # LoRA scale is alpha / rank
    lora_dropout: float = 0.0  # small data sets gain little from it and it slows CPU steps
    warmup_fraction: float = 0.03  # of all steps, linear warm-up before a linear decay to zero
    weight_decay: float = 0.0
    prompt_loss_weight: float = DEFAULT_PROMPT_LOSS_WEIGHT  # legacy prompt/completion data: loss weight of prompts
    eval_every: int = 0  # steps between validation mini-batches; 0 spreads EVALUATIONS_PER_RUN over the run
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N" (devices.resolve_device; bfloat16 on CUDA)
    attention: str = "auto"  # transformers' attention implementation (devices.attention_implementation)

    def __post_init__(self) -> None:
        for name in ("n_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if self.training_type not in ("lora", "full"):
            raise ValueError("training_type must be 'lora' or 'full'")
        if not 0 <= self.prompt_loss_weight <= 1:
            raise ValueError("prompt_loss_weight must be between 0 and 1")


@dataclass
class StepMetrics:
    step: int
    total_steps: int
    epoch: int  # 1-based
    train_loss: float
    train_mean_token_accuracy: float
    valid_loss: float | None = None  # on a validation mini-batch, every eval_every steps
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None  # on the whole validation set, at each epoch's end
    full_valid_mean_token_accuracy: float | None = None

    def as_data(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def message(self) -> str:
        """The guide's wording: "Step 3/30: training loss=1.52", with validation losses when known."""
        message = f"Step {self.step}/{self.total_steps}: training loss={self.train_loss:.2f}"
        if self.valid_loss is not None:
            message += f", validation loss={self.valid_loss:.2f}"
        if self.full_valid_loss is not None:
            message += f", full validation loss={self.full_valid_loss:.2f}"
        return message


@dataclass
class SFTResult:
    steps: int = 0
    trained_tokens: int = 0  # every token of every example, times the epochs run (what is billed)
    stopped: bool = False  # on_step asked to stop before the end
    history: list[StepMetrics] = field(default_factory=list)


OnStep = Callable[[StepMetrics], bool]  # returns False to stop training
OnEpochEnd = Callable[[StepMetrics], None]  # the metrics of the epoch's last step
KeepGoing = Callable[[], bool]  # asked between long pieces of work that come before a step: False stops


class SFTRecipe:
    metrics_type = StepMetrics

    def __init__(self, config: SFTConfig):
        self.config = config

    # setup -----------------------------------------------------------------------------------
    def setup(self, examples: list[dict[str, Any]], valid_examples: list[dict[str, Any]] | None = None) -> None:
        from transformers import AutoTokenizer

        cfg = self.config
        _seed_everything(cfg.seed)
        self.device = resolve_device(cfg.device)
        dtype = training_dtype(self.device)
        attention = attention_implementation(cfg.attention, self.device, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.base_model)
        self._tokenizer_files: dict[str, bytes] | None = None  # as save_pretrained writes them
        # A full checkpoint holds every weight; a LoRA one holds the adapter to put on the base.
        resumed_full = cfg.resume_from is not None and cfg.training_type == "full"
        model = self._load(cfg.resume_from if resumed_full else cfg.base_model, dtype, attention)
        max_length = min(MAX_SEQUENCE_TOKENS, getattr(model.config, "max_position_embeddings", MAX_SEQUENCE_TOKENS))
        self.examples = self._render(examples, max_length)
        self.valid_examples = self._render(valid_examples or [], max_length)
        self.model = self._place(model)
        self.model.config.use_cache = False
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.steps_per_epoch = math.ceil(len(self.examples) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.n_epochs
        self.eval_every = cfg.eval_every or max(1, self.total_steps // EVALUATIONS_PER_RUN)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.row_tokens = row_tokens(model.config.num_hidden_layers, model.config.hidden_size)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        warmup = max(1, int(self.total_steps * cfg.warmup_fraction))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min((s + 1) / warmup, max(0.0, (self.total_steps - s) / max(1, self.total_steps - warmup))),
        )
        self.order = random.Random(cfg.seed)
        self.valid_cursor = 0
        # Where training stands: the epoch under way, its shuffled order and the next batch's start.
        self.epoch, self.epoch_order, self.next_start = 1, None, 0
        self.result = SFTResult()
        if cfg.resume_from is not None:
            self._restore(Path(cfg.resume_from) / TRAINER_STATE)

    def _render(self, examples: list[dict[str, Any]], max_length: int) -> list[Rendered]:
        return [render_example(self.tokenizer, e, max_length=max_length, prompt_loss_weight=self.config.prompt_loss_weight)
                for e in examples]

    def _load(self, source: str | Path, dtype: torch.dtype, attention: str | None):
        """The model to train, in CPU memory: the weights of `source` (a base model, or a full
        checkpoint to go on from), with the adapter to train or to go on from."""
        from transformers import AutoModelForCausalLM

        return self._trainable(AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation=attention))

    def _trainable(self, model):
        cfg = self.config
        if cfg.resume_from is not None:
            if cfg.training_type == "full":
                return model  # loaded from the checkpoint
            from peft import PeftModel

            return PeftModel.from_pretrained(model, cfg.resume_from, is_trainable=True)
        if cfg.init_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=cfg.training_type == "lora")
            if cfg.training_type == "lora":
                return model
            model = model.merge_and_unload()  # full training goes on from base + adapter merged
            model.requires_grad_(True)  # PEFT left the base weights frozen
            return model
        if cfg.training_type == "full":
            return model
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(
            r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=LORA_TARGET_MODULES, task_type="CAUSAL_LM",
        ))

    def _place(self, model):
        """The trainable model on its device (sharded.py: each process's shard of it)."""
        return model.to(self.device)

    # train -----------------------------------------------------------------------------------
    def train(self, on_step: OnStep, on_epoch_end: OnEpochEnd | None = None,
              keep_going: KeepGoing | None = None) -> SFTResult:
        """Train to the end, or until on_step (or keep_going, before the first step) asks to stop;
        a recipe set up with resume_from goes on from the step its checkpoint was saved at, in the
        same order of examples."""
        cfg = self.config
        result = self.result
        result.stopped = False
        if not self._prepare(keep_going or (lambda: True)):
            result.stopped = True
            return result
        self.model.train()
        for epoch in range(self.epoch, cfg.n_epochs + 1):
            self.epoch = epoch
            if self.epoch_order is None:
                self.epoch_order = list(range(len(self.examples)))
                self.order.shuffle(self.epoch_order)
                self.next_start = 0
            indices = self.epoch_order
            while self.next_start < len(indices):
                start = self.next_start
                metrics, tokens = self._train_batch([self.examples[i] for i in indices[start:start + cfg.batch_size]],
                                                    result.steps + 1, epoch)
                self.next_start = start + cfg.batch_size
                result.steps += 1
                result.trained_tokens += tokens
                if self.valid_examples and result.steps % self.eval_every == 0:
                    self._validate(metrics, self._valid_mini_batch(), whole=False)
                last_of_epoch = self.next_start >= len(indices)
                if self.valid_examples and last_of_epoch:
                    self._validate(metrics, self.valid_examples, whole=True)
                result.history.append(metrics)
                go_on = on_step(metrics)
                if last_of_epoch:
                    self.epoch, self.epoch_order = epoch + 1, None  # what a checkpoint saved now resumes from
                    if on_epoch_end is not None:
                        on_epoch_end(metrics)  # an epoch's checkpoint is written even when stopping here
                if not go_on:
                    result.stopped = True
                    return result
        return result

    # What a method changes (dpo.py): work before the first step, a step over a batch of examples,
    # and validation.
    def _prepare(self, keep_going: KeepGoing) -> bool:
        """Work the method does before its first step, in pieces with keep_going asked between
        them; False when it stopped before the end (train() is called again to go on)."""
        return True

    def _train_batch(self, examples: list[Rendered], step: int, epoch: int) -> tuple[StepMetrics, int]:
        """One optimizer step: its metrics, and the tokens it trained on."""
        batch = pack(examples, self.pad_id, self.row_tokens, share_prefix=True)
        loss, accuracy = self._step(batch.to(self.device))
        return StepMetrics(step, self.total_steps, epoch, loss, accuracy), batch.tokens

    def _validate(self, metrics: StepMetrics, examples: list[Rendered], *, whole: bool) -> None:
        """The step's validation figures: on a mini-batch, or on the whole set (whole)."""
        loss, accuracy = self.evaluate(examples)
        if whole:
            metrics.full_valid_loss, metrics.full_valid_mean_token_accuracy = loss, accuracy
        else:
            metrics.valid_loss, metrics.valid_mean_token_accuracy = loss, accuracy

    def _step(self, batch: Batch) -> tuple[float, float]:
        """One optimizer step over the batch, a packed row at a time: each row's gradients are
        scaled by the whole batch's loss weight, so the update is the same as in one pass."""
        total = batch.loss_weight()
        loss_sum, correct, counted = self._backward(batch, total)
        self._optimizer_step()
        return loss_sum / float(total), correct / max(1, counted)

    def _backward(self, batch: Batch, total) -> tuple[float, float, float]:
        """Each row's loss divided by total (the loss weight of the whole optimizer step, all its
        processes' rows: distributed.py) back-propagated; the summed loss, correct and counted."""
        loss_sum = correct = counted = 0.0
        for row in batch.rows():
            row_loss, row_correct, row_counted = self._loss_sum(row)
            (row_loss / total).backward()
            loss_sum += row_loss.item()
            correct += row_correct
            counted += row_counted
        return loss_sum, correct, counted

    def _optimizer_step(self) -> None:
        """Apply the gradients accumulated since the last step (clipped), and advance the schedule."""
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _loss_sum(self, batch: Batch) -> tuple[torch.Tensor, int, int]:
        """Weighted sum of token losses, and correct / counted predictions at full weight."""
        # Position t predicts token t+1: only positions whose next token carries loss are projected.
        targets, weights = batch.labels[:, 1:], batch.weights[:, 1:]
        trained = targets != IGNORE
        logits = self._logits_at(batch, torch.cat([trained, torch.zeros_like(trained[:, :1])], dim=1))
        wanted, weight = targets[trained], weights[trained]
        token_losses = torch.nn.functional.cross_entropy(logits, wanted, reduction="none")
        full = weight == 1.0  # accuracy on the tokens trained at full weight, as the guide reports it
        correct = int((logits.argmax(-1)[full] == wanted[full]).sum())
        return (token_losses * weight).sum(), correct, int(full.sum())

    def _logits_at(self, batch: Batch, positions: torch.Tensor) -> torch.Tensor:
        """The float32 logits at the positions a [rows, width] mask marks, row after row."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = base.get_decoder()(input_ids=batch.input_ids, position_ids=batch.position_ids,
                                    attention_mask=batch.attention_mask(base.dtype)).last_hidden_state
        return _output_logits(base, hidden[positions])

    # evaluate --------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, examples: list[Rendered]) -> tuple[float, float]:
        """Loss and token accuracy over examples (token-weighted, as over one large batch)."""
        was_training = self.model.training
        self.model.eval()
        loss_sum = weight_sum = correct = counted = 0.0
        for start in range(0, len(examples), self.config.batch_size):
            batch = pack(examples[start:start + self.config.batch_size], self.pad_id).to(self.device)
            for row in batch.rows():
                row_loss, row_correct, row_counted = self._loss_sum(row)
                loss_sum += row_loss.item()
                correct += row_correct
                counted += row_counted
            weight_sum += float(batch.loss_weight())
        self.model.train(was_training)
        return loss_sum / max(weight_sum, 1e-9), correct / max(1, counted)

    @torch.no_grad()
    def next_token_logprobs(self, prompts: list[list[int]]) -> torch.Tensor:
        """Log-probabilities of the token after each prompt, [len(prompts), vocabulary]."""
        was_training = self.model.training
        self.model.eval()
        out = []
        for start in range(0, len(prompts), self.config.batch_size):
            chunk = [Rendered(p, [IGNORE] * len(p)) for p in prompts[start:start + self.config.batch_size]]
            batch = pack(chunk, self.pad_id).to(self.device)
            ends = [(row, begin + length - 1) for row, begin, length in batch.spans]
            wanted = torch.zeros_like(batch.input_ids, dtype=torch.bool)
            for row, end in ends:
                wanted[row, end] = True
            logits = self._logits_at(batch, wanted)  # in the order of (row, position), not of the prompts
            in_order = torch.empty_like(logits)
            in_order[sorted(range(len(ends)), key=ends.__getitem__)] = logits
            out.append(torch.log_softmax(in_order, dim=-1))
        self.model.train(was_training)
        return torch.cat(out)

    def _valid_mini_batch(self) -> list:
        """The next batch_size validation examples, round the set."""
        size = min(self.config.batch_size, len(self.valid_examples))
        chosen = [self.valid_examples[(self.valid_cursor + i) % len(self.valid_examples)] for i in range(size)]
        self.valid_cursor = (self.valid_cursor + size) % len(self.valid_examples)
        return chosen

    # save_checkpoint -------------------------------------------------------------------------
    def save_checkpoint(self, folder: Path, metrics: StepMetrics, *, with_state: bool = True) -> None:
        """Weights (adapter or full), tokenizer, config and metrics, the trainer state to resume
        from, and last the manifest that marks the checkpoint complete."""
        self._save_weights(folder)
        self._save_tokenizer(folder)
        (folder / CONFIG_FILE).write_text(json.dumps({"config": asdict(self.config), "metrics": metrics.as_data()}, indent=2))
        if with_state:
            torch.save({**self._optimizer_state(), "scheduler": self.scheduler.state_dict(),
                        "epoch": self.epoch, "epoch_order": self.epoch_order, "next_start": self.next_start,
                        "order": self.order.getstate(), "torch_rng": torch.get_rng_state(),
                        "valid_cursor": self.valid_cursor, "steps": self.result.steps,
                        "trained_tokens": self.result.trained_tokens,
                        "history": [asdict(m) for m in self.result.history], **self._method_state()},
                       folder / TRAINER_STATE)
        write_manifest(folder, step=metrics.step, epoch=metrics.epoch, training_type=self.config.training_type)

    def _save_weights(self, folder: Path) -> None:
        self.model.save_pretrained(folder)

    def _save_tokenizer(self, folder: Path) -> None:
        """The tokenizer's files, serialized once per run: they never change, and serializing a
        large vocabulary at every checkpoint cost more than the checkpoint of a small model."""
        if self._tokenizer_files is None:
            with tempfile.TemporaryDirectory() as scratch:
                self.tokenizer.save_pretrained(scratch)
                self._tokenizer_files = {path.name: path.read_bytes() for path in Path(scratch).iterdir()}
        for name, content in self._tokenizer_files.items():
            (folder / name).write_bytes(content)

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state for the trainer state file (sharded.py writes its shards beside it)."""
        return {"optimizer": self.optimizer.state_dict()}

    def _restore(self, path: Path) -> None:
        state = torch.load(path, weights_only=False)  # our own file, written by save_checkpoint
        self._load_optimizer(state, path.parent)
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.epoch_order, self.next_start = state["epoch"], state["epoch_order"], state["next_start"]
        self.order.setstate(state["order"])
        torch.set_rng_state(state["torch_rng"])
        self.valid_cursor = state["valid_cursor"]
        self.result = SFTResult(steps=state["steps"], trained_tokens=state["trained_tokens"],
                                history=[self.metrics_type(**m) for m in state["history"]])
        self._restore_method_state(state)

    def _load_optimizer(self, state: dict[str, Any], folder: Path) -> None:
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        else:  # a sharded run's checkpoint: each process wrote its part of the optimizer's state
            load_optimizer_shards(self.model, self.optimizer, folder / TRAINER_SHARDS)

    def _method_state(self) -> dict[str, Any]:
        """What a method adds to the trainer state (dpo.py: the reference's log-probabilities)."""
        return {}

    def _restore_method_state(self, state: dict[str, Any]) -> None:
        pass

    # cleanup ---------------------------------------------------------------------------------
    def cleanup(self) -> None:
        for name in ("model", "optimizer", "scheduler", "examples", "valid_examples", "trainable"):
            self.__dict__.pop(name, None)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The logits a causal LM's forward would give from its final hidden states (Gemma 2 caps
    them softly), in float32."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return cap * torch.tanh(logits / cap) if cap else logits
