"""The recipe on the tiny model: it learns a toy mapping (loss falls, answers change), the same
seed gives the same losses, and a stop request ends training at once."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunery.data.render import render_generation_prompt
from tunery.training.sft import CONFIG_FILE, SFTConfig, SFTRecipe

PAIRS = [("red", "apple"), ("yellow", "banana"), ("green", "lime"), ("purple", "grape")]
EXAMPLES = [{"messages": [{"role": "user", "content": color}, {"role": "assistant", "content": fruit}]}
            for color, fruit in PAIRS] * 3


def train(tiny_model_dir, on_step=lambda m: True, **overrides):
    config = SFTConfig(base_model=str(tiny_model_dir), n_epochs=15, batch_size=4, learning_rate=1e-2, seed=7)
    for key, value in overrides.items():
        setattr(config, key, value)
    recipe = SFTRecipe(config)
    recipe.setup(EXAMPLES)
    return recipe, recipe.train(on_step)


def answer(model, tokenizer, color: str) -> str:
    prompt = render_generation_prompt(tokenizer, [{"role": "user", "content": color}])
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True)


@pytest.mark.parametrize("training_type, learning_rate", [("lora", 1e-2), ("full", 3e-3)])
def test_tiny_model_learns_a_toy_mapping(tiny_model_dir, tmp_path, training_type, learning_rate):
    recipe, result = train(tiny_model_dir, training_type=training_type, learning_rate=learning_rate)
    losses = [m.train_loss for m in result.history]
    assert result.steps == 45 and not result.stopped
    last_epoch = losses[-3:]  # 12 examples in batches of 4
    assert sum(last_epoch) / 3 < 0.6 * losses[0], losses
    assert result.history[-1].train_mean_token_accuracy > result.history[0].train_mean_token_accuracy

    recipe.model.eval()
    answers = [answer(recipe.model, recipe.tokenizer, color) for color, _ in PAIRS]
    # Each colour now gets its own fruit (a tiny model may ramble on after it).
    assert all(said.startswith(fruit) for said, (_, fruit) in zip(answers, PAIRS)), answers

    recipe.save(tmp_path, result)
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert saved["config"]["training_type"] == training_type and saved["steps"] == 45
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert not any(answer(base, recipe.tokenizer, c).startswith(f) for c, f in PAIRS)
    recipe.cleanup()


def test_same_seed_same_losses(tiny_model_dir):
    first = [m.train_loss for m in train(tiny_model_dir, n_epochs=3)[1].history]
    again = [m.train_loss for m in train(tiny_model_dir, n_epochs=3)[1].history]
    other = [m.train_loss for m in train(tiny_model_dir, n_epochs=3, seed=8)[1].history]
    assert first == again
    assert first != other


def test_stop_request_ends_training_after_that_step(tiny_model_dir):
    _, result = train(tiny_model_dir, on_step=lambda m: m.step < 2)
    assert result.stopped and result.steps == 2
