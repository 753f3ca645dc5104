"""The DPO recipe on the tiny model: its loss is DPO's, computed directly from the model's logits
on each sequence alone; its reference is the model training started from; it learns the
preference; a resumed run matches one that never stopped, and so does one stopped during its
reference pass; a LoRA run continued from a
supervised adapter takes that adapter as its reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from tests.helpers import COLOR_PREFERENCES
from tunery.data.render import IGNORE
from tunery.training.dpo import DPOConfig, DPORecipe

PREFERENCES = COLOR_PREFERENCES


def dpo_recipe(base, *, examples=PREFERENCES, valid=None, **overrides) -> DPORecipe:
    options = dict(base_model=str(base), n_epochs=6, batch_size=4, learning_rate=1e-2, seed=7, beta=0.5) | overrides
    recipe = DPORecipe(DPOConfig(**options))
    recipe.setup(examples, valid)
    return recipe


def output_logps(model, rendered) -> float:
    """The summed log-probability of the labelled tokens, from the model's plain forward pass on
    this one sequence (no packing, no shared prompt)."""
    ids = torch.tensor([rendered.input_ids])
    labels = torch.tensor(rendered.labels[1:])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    trained = labels != IGNORE
    return logprobs[trained].gather(-1, labels[trained][:, None]).sum().item()


def direct_loss(policy, reference, pairs, beta) -> float:
    losses = []
    for pair in pairs:
        chosen = output_logps(policy, pair.chosen) - output_logps(reference, pair.chosen)
        rejected = output_logps(policy, pair.rejected) - output_logps(reference, pair.rejected)
        losses.append(-F.logsigmoid(torch.tensor(beta * (chosen - rejected))).item())
    return sum(losses) / len(losses)


def test_only_the_outputs_tokens_are_labelled(tiny_model_dir, smol_tokenizer):
    recipe = dpo_recipe(tiny_model_dir, n_epochs=1)
    pair = recipe.examples[0]
    for rendered, key in ((pair.chosen, "preferred_output"), (pair.rejected, "non_preferred_output")):
        trained = [t for t, label in zip(rendered.input_ids, rendered.labels) if label != IGNORE]
        assert smol_tokenizer.decode(trained) == PREFERENCES[0][key][0]["content"] + "<|im_end|>"


def test_the_loss_is_dpos_on_each_sequence_alone_and_the_reference_is_the_start(tiny_model_dir):
    recipe = dpo_recipe(tiny_model_dir, n_epochs=2)
    first = recipe.evaluate(recipe.examples)
    assert first.loss == pytest.approx(math.log(2), abs=1e-5)  # before training the model is its reference
    result = recipe.train(lambda m: True)
    assert result.steps == 6

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for pair in recipe.examples:  # the reference kept is the untrained model's, not the adapter's
        assert pair.reference == pytest.approx((output_logps(base, pair.chosen), output_logps(base, pair.rejected)), abs=1e-4)
    trained = recipe.evaluate(recipe.examples)
    recipe.model.eval()
    assert trained.loss == pytest.approx(direct_loss(recipe.model, base, recipe.examples, beta=0.5), abs=1e-4)
    assert abs(trained.loss - math.log(2)) > 0.01  # and it moved


def test_it_learns_the_preference(tiny_model_dir):
    valid = PREFERENCES[:4]
    recipe = dpo_recipe(tiny_model_dir, valid=valid)
    result = recipe.train(lambda m: True)
    first, last = result.history[0], result.history[-1]
    assert last.train_loss < 0.5 * first.train_loss, [m.train_loss for m in result.history]
    assert last.full_valid_reward_accuracy == 1.0 and last.full_valid_reward_margin > 0
    assert last.train_chosen_logps > first.train_chosen_logps  # the preferred answers became likelier
    assert last.train_rejected_logps < first.train_rejected_logps
    assert {"train_reward_margin", "train_reward_accuracy", "full_valid_reward_accuracy"} <= set(last.as_data())
    assert "reward accuracy=" in last.message()


@pytest.mark.parametrize("training_type, learning_rate, stop_at", [("lora", 1e-2, 3), ("full", 3e-3, 2)])
def test_a_resumed_run_matches_one_that_never_stopped(tiny_model_dir, tmp_path, training_type, learning_rate, stop_at):
    options = dict(n_epochs=2, training_type=training_type, learning_rate=learning_rate)
    straight = dpo_recipe(tiny_model_dir, **options).train(lambda m: True)
    recipe = dpo_recipe(tiny_model_dir, **options)
    stopped = recipe.train(lambda m: m.step < stop_at)
    recipe.save_checkpoint(tmp_path, stopped.history[-1])
    recipe.cleanup()

    resumed = dpo_recipe(tiny_model_dir, resume_from=str(tmp_path), **options)
    result = resumed.train(lambda m: True)
    assert [m.step for m in result.history] == list(range(1, 7))
    assert [m.train_loss for m in result.history] == pytest.approx([m.train_loss for m in straight.history], rel=1e-5)
    assert result.trained_tokens == straight.trained_tokens


def test_a_stop_during_the_reference_pass_stops_it_and_a_second_call_goes_on(tiny_model_dir):
    straight = dpo_recipe(tiny_model_dir, n_epochs=1).train(lambda m: True)
    recipe = dpo_recipe(tiny_model_dir, n_epochs=1)
    asked = []

    def keep_going() -> bool:  # a pause arrives after the first batch of pairs
        asked.append(True)
        return len(asked) < 2

    stopped = recipe.train(lambda m: True, keep_going=keep_going)
    assert stopped.stopped and stopped.steps == 0 and not stopped.history
    done = [p.reference is not None for p in recipe.examples]
    assert done == [True] * 4 + [False] * (len(done) - 4)  # one batch of pairs, then it stopped
    result = recipe.train(lambda m: True)
    assert [m.train_loss for m in result.history] == pytest.approx([m.train_loss for m in straight.history], rel=1e-6)


def test_a_run_continued_from_a_supervised_adapter_takes_it_as_reference(tiny_model_dir, tmp_path, train_tiny):
    from peft import PeftModel

    supervised, result = train_tiny(n_epochs=5)
    supervised.save_checkpoint(tmp_path, result.history[-1], with_state=False)
    recipe = dpo_recipe(tiny_model_dir, init_adapter=str(tmp_path), n_epochs=1)
    assert recipe.evaluate(recipe.examples).loss == pytest.approx(math.log(2), abs=1e-5)

    started = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    pair = recipe.examples[0]
    assert pair.reference[0] == pytest.approx(output_logps(started, pair.chosen), abs=1e-4)
    assert abs(pair.reference[0] - output_logps(base, pair.chosen)) > 0.1  # the base would be another reference
