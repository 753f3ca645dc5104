"""The recipe on the tiny model: it learns a toy mapping (loss falls, answers change), the same
seed gives the same losses, and a stop request ends training at once."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.helpers import COLOR_EXAMPLES, COLOR_PAIRS
from tunery.data.render import render_generation_prompt
from tunery.training.batching import pack
from tunery.training.checkpoints import read_manifest
from tunery.training.sft import CONFIG_FILE, SFTConfig, SFTRecipe

PAIRS, EXAMPLES = COLOR_PAIRS, COLOR_EXAMPLES


def mean_loss(recipe, batch):
    return recipe._loss_sum(batch)[0] / batch.loss_weight()


def answer(model, tokenizer, color: str) -> str:
    prompt = render_generation_prompt(tokenizer, [{"role": "user", "content": color}])
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)


@pytest.mark.parametrize("training_type, learning_rate", [("lora", 1e-2), ("full", 3e-3)])
def test_tiny_model_learns_a_toy_mapping(train_tiny, tiny_model_dir, tmp_path, training_type, learning_rate):
    recipe, result = train_tiny(training_type=training_type, learning_rate=learning_rate)
    losses = [m.train_loss for m in result.history]
    assert result.steps == 45 and not result.stopped
    last_epoch = losses[-3:]  # 12 examples in batches of 4
    assert sum(last_epoch) / 3 < 0.6 * losses[0], losses
    assert result.history[-1].train_mean_token_accuracy > result.history[0].train_mean_token_accuracy

    recipe.model.eval()
    answers = [answer(recipe.model, recipe.tokenizer, color) for color, _ in PAIRS]
    # Each colour now gets its own fruit (a tiny model may ramble on after it).
    assert all(said.startswith(fruit) for said, (_, fruit) in zip(answers, PAIRS)), answers

    recipe.save_checkpoint(tmp_path, result.history[-1])
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert saved["config"]["training_type"] == training_type and saved["metrics"]["step"] == 45
    assert read_manifest(tmp_path)["step"] == 45
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert not any(answer(base, recipe.tokenizer, c).startswith(f) for c, f in PAIRS)
    recipe.cleanup()


def test_same_seed_same_losses(train_tiny):
    first = [m.train_loss for m in train_tiny(n_epochs=3)[1].history]
    again = [m.train_loss for m in train_tiny(n_epochs=3)[1].history]
    other = [m.train_loss for m in train_tiny(n_epochs=3, seed=8)[1].history]
    assert first == again
    assert first != other


def test_stop_request_ends_training_after_that_step(train_tiny):
    _, result = train_tiny(on_step=lambda m: m.step < 2)
    assert result.stopped and result.steps == 2


@pytest.mark.parametrize("training_type, learning_rate, stop_at", [
    ("lora", 1e-2, 5),  # mid-epoch (3 steps an epoch)
    ("lora", 1e-2, 3),  # at an epoch's end
    ("full", 3e-3, 4),
])
def test_a_run_resumed_from_its_checkpoint_matches_one_that_never_stopped(train_tiny, tiny_model_dir, tmp_path,
                                                                          training_type, learning_rate, stop_at):
    options = dict(n_epochs=3, training_type=training_type, learning_rate=learning_rate)
    _, straight = train_tiny(**options)
    recipe, stopped = train_tiny(on_step=lambda m: m.step < stop_at, **options)
    assert stopped.stopped and stopped.steps == stop_at
    recipe.save_checkpoint(tmp_path, stopped.history[-1])
    recipe.cleanup()

    config = SFTConfig(base_model=str(tiny_model_dir), batch_size=4, seed=7, resume_from=str(tmp_path), **options)
    resumed = SFTRecipe(config)
    resumed.setup(EXAMPLES)
    result = resumed.train(lambda m: True)
    assert [m.step for m in result.history] == list(range(1, 10))
    assert [m.train_loss for m in result.history] == pytest.approx([m.train_loss for m in straight.history], rel=1e-5)
    assert result.trained_tokens == straight.trained_tokens and not result.stopped


def test_a_packed_batch_gives_the_loss_of_its_examples_apart(tiny_model_dir):
    """Packing keeps attention inside each example and positions restarting: the packed loss is
    the token-weighted mean of the examples' own losses."""
    recipe = SFTRecipe(SFTConfig(base_model=str(tiny_model_dir), n_epochs=1, batch_size=4, learning_rate=1e-3))
    recipe.setup(EXAMPLES[:4])
    examples = recipe.examples[:4]
    with torch.no_grad():
        packed = mean_loss(recipe, pack(examples, recipe.pad_id))
        apart = [mean_loss(recipe, pack([e], recipe.pad_id)).item() for e in examples]
    sizes = [e.trained_tokens for e in examples]
    expected = sum(loss * n for loss, n in zip(apart, sizes)) / sum(sizes)
    assert packed.item() == pytest.approx(expected, rel=1e-5)
    assert pack(examples, recipe.pad_id).input_ids.shape[0] == 1  # one row, no padding between examples


def test_loss_at_trained_positions_equals_the_full_logits_loss(tiny_model_dir):
    recipe = SFTRecipe(SFTConfig(base_model=str(tiny_model_dir), n_epochs=1, batch_size=1, learning_rate=1e-3))
    recipe.setup(EXAMPLES[:1])
    example = recipe.examples[0]
    ids, labels = torch.tensor([example.input_ids]), torch.tensor([example.labels])
    with torch.no_grad():
        batch = pack([example], recipe.pad_id)
        ours, counted = mean_loss(recipe, batch), recipe._loss_sum(batch)[2]
        logits = recipe.model(input_ids=ids).logits
        reference = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    assert counted == example.trained_tokens


def test_validation_metrics_every_n_steps_and_over_the_full_set_at_each_epoch_end(tiny_model_dir):
    recipe = SFTRecipe(SFTConfig(base_model=str(tiny_model_dir), n_epochs=2, batch_size=4, learning_rate=1e-2,
                                 eval_every=2))
    recipe.setup(EXAMPLES, EXAMPLES[:4])
    epochs_seen = []
    result = recipe.train(lambda m: True, on_epoch_end=lambda m: epochs_seen.append(m.step))
    by_step = {m.step: m for m in result.history}
    assert [s for s, m in by_step.items() if m.valid_loss is not None] == [2, 4, 6]
    assert [s for s, m in by_step.items() if m.full_valid_loss is not None] == [3, 6] == epochs_seen
    assert by_step[6].full_valid_loss < by_step[3].full_valid_loss
    assert 0 <= by_step[6].full_valid_mean_token_accuracy <= 1


def test_training_continues_from_a_saved_adapter(train_tiny, tmp_path):
    first, result = train_tiny(n_epochs=5)
    first.save_checkpoint(tmp_path, result.history[-1])
    first.cleanup()
    _, continued = train_tiny(n_epochs=1, init_adapter=str(tmp_path))
    _, fresh = train_tiny(n_epochs=1)
    # The continued run starts where the first left off, far below a fresh start.
    assert continued.history[0].train_loss < 0.8 * fresh.history[0].train_loss
    assert continued.history[0].train_loss == pytest.approx(result.history[-1].train_loss, rel=0.5)


def test_gradients_accumulated_row_by_row_equal_one_pass(tiny_model_dir):
    recipe = SFTRecipe(SFTConfig(base_model=str(tiny_model_dir), n_epochs=1, batch_size=4, learning_rate=1e-3))
    recipe.setup(EXAMPLES[:4])
    batch = pack(recipe.examples[:4], recipe.pad_id, max_tokens=40)  # several rows
    assert batch.input_ids.shape[0] > 1

    def gradients(rows):
        recipe.optimizer.zero_grad(set_to_none=True)
        total = batch.loss_weight()
        for row in rows:
            (recipe._loss_sum(row)[0] / total).backward()
        return [p.grad.clone() for p in recipe.trainable if p.grad is not None]

    one_pass, by_row = gradients([batch]), gradients(batch.rows())
    assert len(one_pass) == len(by_row) > 0
    for a, b in zip(one_pass, by_row):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max(), ((a - b).abs().max(), a.abs().max())


def test_a_batch_sharing_its_examples_beginning_gives_their_loss_and_gradients_apart(tiny_model_dir):
    """The colour examples begin alike (the template's system prompt and user opening): packed
    sharing that beginning, a step computes fewer tokens for the same loss and gradients."""
    recipe = SFTRecipe(SFTConfig(base_model=str(tiny_model_dir), n_epochs=1, batch_size=4, learning_rate=1e-3))
    recipe.setup(EXAMPLES[:4])
    examples = recipe.examples[:4]
    shared, apart = pack(examples, recipe.pad_id, share_prefix=True), pack(examples, recipe.pad_id)
    assert shared.segments is not None and shared.input_ids.numel() < apart.input_ids.numel()
    assert shared.loss_weight() == apart.loss_weight() and shared.tokens == apart.tokens

    def loss_and_gradients(batch):
        recipe.optimizer.zero_grad(set_to_none=True)
        loss = recipe._loss_sum(batch)[0] / batch.loss_weight()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in recipe.trainable if p.grad is not None]

    (loss_shared, grads_shared), (loss_apart, grads_apart) = loss_and_gradients(shared), loss_and_gradients(apart)
    assert loss_shared == pytest.approx(loss_apart, rel=1e-5)
    assert len(grads_shared) == len(grads_apart) > 0
    for a, b in zip(grads_apart, grads_shared):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max(), ((a - b).abs().max(), a.abs().max())


def test_only_an_untrained_beginning_is_shared(tiny_model_dir):
    """Prompts trained at prompt_loss_weight (legacy prompt/completion data) share nothing: a
    shared token could not predict each example's own next token."""
    recipe = SFTRecipe(SFTConfig(base_model=str(tiny_model_dir), n_epochs=1, batch_size=4, learning_rate=1e-3,
                                 prompt_loss_weight=0.01))
    recipe.setup([{"prompt": f"Ticket: the same long opening words of every ticket, then {w}\n\n###\n\n",
                   "completion": f" {w}"} for w in ("red", "green", "blue")])
    assert pack(recipe.examples, recipe.pad_id, share_prefix=True).segments is None
    untrained = SFTRecipe(SFTConfig(base_model=str(tiny_model_dir), n_epochs=1, batch_size=4, learning_rate=1e-3,
                                    prompt_loss_weight=0.0))
    untrained.setup([{"prompt": f"Ticket: the same long opening words of every ticket, then {w}\n\n###\n\n",
                      "completion": f" {w}"} for w in ("red", "green", "blue")])
    batch = pack(untrained.examples, untrained.pad_id, share_prefix=True)
    assert batch.segments is not None
    shared = int((batch.segments == 0).sum())
    first_trained = min(next(i for i, label in enumerate(e.labels) if label != -100) for e in untrained.examples)
    assert 8 <= shared < first_trained
