"""The DPO recipe: direct preference optimization (Rafailov et al., 2023), LoRA or full, on
OpenAI's preference data ({"input": {"messages", "tools"?}, "preferred_output": [one assistant
message], "non_preferred_output": [one]}). Everything but the step and validation is the
supervised recipe's (sft.py): model loading, LoRA, optimizer and schedule, checkpoints, resuming.

The loss of a pair is -log sigmoid(beta * ((chosen - chosen_ref) - (rejected - rejected_ref))),
each term the summed log-probability of exactly the output's tokens (its end-of-turn token
included), under the model being trained and under the reference: the model training started
from (a base model with a fresh LoRA adapter, whose update is zero at first; a fine-tuned model
being continued, as the guide advises: supervised first, then DPO). The reference's
log-probabilities are computed once, before the first step (in pieces, so that a pause or a
cancel is not kept waiting), and kept in the trainer state: no second copy of the weights, no
reference forward pass at each step, and a resumed job keeps the reference it started with.

Pairs are packed into rows (pairs.py): a pair's two sequences side by side, their common beginning
(the prompt) once, several pairs to a row; the optimizer step accumulates the rows' gradients, so
memory holds one row's activations."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tunery.data.render import IGNORE, Rendered, render_example
from tunery.training.pairs import PairRow, pack_pairs
from tunery.training.sft import KeepGoing, SFTConfig, SFTRecipe, _output_logits


@dataclass
class DPOConfig(SFTConfig):
    beta: float = 0.1  # how far from the reference the preference may pull the model

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError("beta must be positive")


@dataclass
class Pair:
    chosen: Rendered  # input + preferred output, only the output's tokens labelled
    rejected: Rendered  # input + non-preferred output
    reference: tuple[float, float] | None = None  # the reference's log-probabilities of both outputs

    @property
    def tokens(self) -> int:
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


@dataclass
class Preferences:
    """A batch's (or a validation set's) DPO figures, means over its pairs."""
    loss: float
    reward_margin: float  # beta * ((chosen - ref) - (rejected - ref))
    reward_accuracy: float  # share of pairs whose chosen output's reward is the higher
    chosen_logps: float  # the model's summed log-probability of the preferred output
    rejected_logps: float


FIGURES = ("reward_margin", "reward_accuracy", "chosen_logps", "rejected_logps")


@dataclass
class DPOStepMetrics:
    step: int
    total_steps: int
    epoch: int
    train_loss: float
    train_reward_margin: float
    train_reward_accuracy: float
    train_chosen_logps: float
    train_rejected_logps: float
    valid_loss: float | None = None  # on a validation mini-batch, every eval_every steps
    valid_reward_margin: float | None = None
    valid_reward_accuracy: float | None = None
    valid_chosen_logps: float | None = None
    valid_rejected_logps: float | None = None
    full_valid_loss: float | None = None  # on the whole validation set, at each epoch's end
    full_valid_reward_margin: float | None = None
    full_valid_reward_accuracy: float | None = None
    full_valid_chosen_logps: float | None = None
    full_valid_rejected_logps: float | None = None

    def as_data(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def message(self) -> str:
        message = (f"Step {self.step}/{self.total_steps}: training loss={self.train_loss:.2f}, "
                   f"reward margin={self.train_reward_margin:.2f}, reward accuracy={self.train_reward_accuracy:.2f}")
        if self.valid_loss is not None:
            message += f", validation loss={self.valid_loss:.2f}"
        if self.full_valid_loss is not None:
            message += (f", full validation loss={self.full_valid_loss:.2f}, "
                        f"full validation reward accuracy={self.full_valid_reward_accuracy:.2f}")
        return message

    def set(self, prefix: str, figures: Preferences) -> None:
        setattr(self, f"{prefix}_loss", figures.loss)
        for name in FIGURES:
            setattr(self, f"{prefix}_{name}", getattr(figures, name))


class DPORecipe(SFTRecipe):
    metrics_type = DPOStepMetrics
    config: DPOConfig

    def _render(self, examples: list[dict[str, Any]], max_length: int) -> list[Pair]:
        return [Pair(self._render_output(e, "preferred_output", max_length),
                     self._render_output(e, "non_preferred_output", max_length)) for e in examples]

    def _render_output(self, example: dict[str, Any], key: str, max_length: int) -> Rendered:
        """The input's messages (assistant turns in it untrained) and the output, trained."""
        given = example["input"]
        messages = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in given["messages"]]
        chat = {"messages": messages + example[key]}
        if given.get("tools"):
            chat["tools"] = given["tools"]
        return render_example(self.tokenizer, chat, max_length=max_length)

    # the reference ---------------------------------------------------------------------------
    def _prepare(self, keep_going: KeepGoing) -> bool:
        """Each pair's log-probabilities under the model as it is before its first step, a batch
        of pairs at a time (a resumed job's came back with its trainer state)."""
        missing = [p for p in self.examples + self.valid_examples if p.reference is None]
        for start in range(0, len(missing), self.config.batch_size):
            if not keep_going():
                return False
            self._compute_references(missing[start:start + self.config.batch_size])
        return True

    @torch.no_grad()
    def _compute_references(self, pairs: list[Pair]) -> None:
        was_training = self.model.training
        self.model.eval()
        for row in pack_pairs([(p.chosen, p.rejected) for p in pairs], self.pad_id, self.row_tokens):
            logps = self._row_logps(row.to(self.device)).view(-1, 2)
            for k, index in enumerate(row.pairs):
                pairs[index].reference = (logps[k, 0].item(), logps[k, 1].item())
        self.model.train(was_training)

    def _method_state(self) -> dict[str, Any]:
        return {"references": [p.reference for p in self.examples], "valid_references": [p.reference for p in self.valid_examples]}

    def _restore_method_state(self, state: dict[str, Any]) -> None:
        for pairs, references in ((self.examples, state["references"]), (self.valid_examples, state["valid_references"])):
            for pair, reference in zip(pairs, references, strict=True):
                pair.reference = tuple(reference)

    # the step --------------------------------------------------------------------------------
    def _row_logps(self, row: PairRow) -> torch.Tensor:
        """The summed log-probabilities of each output in the row: [chosen, rejected] of its first
        pair, of its second ... ([2 x pairs])."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = base.get_decoder()(input_ids=row.input_ids, position_ids=row.position_ids,
                                    attention_mask=row.attention_mask(base.dtype)).last_hidden_state
        # Position t predicts token t+1: only positions whose next token is trained are projected.
        targets = row.labels[0, 1:]
        trained = targets != IGNORE
        logprobs = torch.log_softmax(_output_logits(base, hidden[0, :-1][trained]), dim=-1)
        picked = logprobs.gather(-1, targets[trained][:, None])[:, 0]
        return torch.zeros(2 * len(row.pairs), device=picked.device).index_add(0, row.owner[1:][trained], picked)

    def _preferences(self, pairs: list[Pair], *, backward: bool) -> Preferences:
        """The pairs' DPO figures; with backward, each row's share of the batch's mean loss is
        back-propagated as it is computed (so only one row's activations are held)."""
        n = max(1, len(pairs))
        return Preferences(*(total / n for total in self._preference_sums(pairs, len(pairs), backward=backward)))

    def _preference_sums(self, pairs: list[Pair], batch_pairs: int, *, backward: bool) -> tuple[float, ...]:
        """The pairs' summed loss, reward margin, wins, chosen and rejected log-probabilities (in
        Preferences' order); with backward, each row's loss divided by batch_pairs (the optimizer
        step's pairs: all its processes' in distributed.py) is back-propagated."""
        beta = self.config.beta
        loss_sum = margin_sum = wins = chosen_sum = rejected_sum = 0.0
        for row in pack_pairs([(p.chosen, p.rejected) for p in pairs], self.pad_id, self.row_tokens):
            logps = self._row_logps(row.to(self.device)).view(-1, 2)
            reference = torch.tensor([pairs[i].reference for i in row.pairs], device=logps.device)
            rewards = beta * (logps - reference)  # [pairs, (chosen, rejected)]
            margins = rewards[:, 0] - rewards[:, 1]
            losses = -F.logsigmoid(margins)
            if backward:
                (losses.sum() / batch_pairs).backward()
            loss_sum += losses.sum().item()
            margin_sum += margins.sum().item()
            wins += (margins > 0).sum().item()
            chosen_sum += logps[:, 0].sum().item()
            rejected_sum += logps[:, 1].sum().item()
        return loss_sum, margin_sum, wins, chosen_sum, rejected_sum

    def _train_batch(self, examples: list[Pair], step: int, epoch: int) -> tuple[DPOStepMetrics, int]:
        figures = self._preferences(examples, backward=True)
        self._optimizer_step()
        return self._step_metrics(figures, step, epoch), sum(p.tokens for p in examples)

    def _step_metrics(self, figures: Preferences, step: int, epoch: int) -> DPOStepMetrics:
        return DPOStepMetrics(step, self.total_steps, epoch, figures.loss, figures.reward_margin,
                              figures.reward_accuracy, figures.chosen_logps, figures.rejected_logps)

    def evaluate(self, examples: list[Pair]) -> Preferences:
        self._prepare(lambda: True)  # evaluated before training: the model as it is is the reference
        return self._evaluate(examples)

    @torch.no_grad()
    def _evaluate(self, examples: list[Pair]) -> Preferences:
        was_training = self.model.training
        self.model.eval()
        figures = self._preferences(examples, backward=False)
        self.model.train(was_training)
        return figures

    def _validate(self, metrics: DPOStepMetrics, examples: list[Pair], *, whole: bool) -> None:
        metrics.set("full_valid" if whole else "valid", self.evaluate(examples))
