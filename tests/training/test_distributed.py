"""Data-parallel training over 2 CPU processes (gloo) on the tiny model: the same job trains to the
losses of one process (LoRA, full sharded and not, DPO), its checkpoints resume on 1 process and a
1-process checkpoint on 2 (sharded full fine-tuning's too), a sharded run continued from a LoRA
model (its weights merged on rank 0 alone) trains as one process does, a stop decided by rank 0
stops every rank at the same step, and a rank that dies fails the run with RankLost."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.helpers import COLOR_EXAMPLES, COLOR_PREFERENCES
from tunery.failpoints import ENVIRONMENT
from tunery.training import distributed
from tunery.training.checkpoints import TRAINER_SHARDS
from tunery.training.hyperparameters import Resolved
from tunery.training.methods import METHODS, RecipeInputs
from tunery.weights import Weights

TWO_CPUS = ["cpu", "cpu"]
TOLERANCE = 1e-3  # the sums of gradients across processes are the same numbers added in another order
# Learning rates as the recipe tests use them (parameters=0: no scaling by model size).
MULTIPLIERS = {("supervised", "lora"): 10, ("supervised", "full"): 60, ("dpo", "lora"): 500}


def job(tiny_model_dir, method="supervised", training_type="lora", n_epochs=3, resume_from=None) -> RecipeInputs:
    hp = Resolved(n_epochs=n_epochs, batch_size=4, learning_rate_multiplier=MULTIPLIERS[method, training_type],
                  training_type=training_type, parameters=0, method=method, beta=0.5 if method == "dpo" else None)
    return RecipeInputs(Weights("base", tiny_model_dir), hp, seed=7, device="cpu", attention="auto",
                        resume_from=resume_from)


def train(inputs: RecipeInputs, devices=None, examples=COLOR_EXAMPLES, stop_at=None, checkpoint=None, valid=None,
          sharding="auto"):
    """Train the job on one process (devices None) or on the devices; stopped after step stop_at
    with a checkpoint in `checkpoint` when asked. The result and the metrics each step reported."""
    method = inputs.hyperparameters.method
    recipe = (METHODS[method].build(inputs) if devices is None
              else distributed.build(method, inputs, devices, sharding=sharding))
    try:
        recipe.setup(examples, valid)
        result = recipe.train(lambda m: stop_at is None or m.step < stop_at)
        if checkpoint is not None:
            recipe.save_checkpoint(checkpoint, result.history[-1])
        return result
    finally:
        recipe.cleanup()


def losses(result) -> list[float]:
    return [m.train_loss for m in result.history]


@pytest.mark.parametrize("method, training_type, sharding", [
    ("supervised", "lora", "auto"), ("supervised", "full", "off"), ("dpo", "lora", "auto")])
def test_two_processes_train_to_the_losses_of_one(tiny_model_dir, method, training_type, sharding):
    """(Sharded full fine-tuning, TUNERY_SHARDING's default: the test after the next.)"""
    examples = COLOR_PREFERENCES if method == "dpo" else COLOR_EXAMPLES
    inputs = job(tiny_model_dir, method, training_type)
    one = train(inputs, examples=examples)
    two = train(inputs, TWO_CPUS, examples=examples, sharding=sharding)
    assert len(two.history) == len(one.history) == 9 and not two.stopped  # 12 examples, 4 a step, 3 epochs
    assert losses(two) == pytest.approx(losses(one), abs=TOLERANCE)
    assert abs(losses(two)[-1] - losses(one)[-1]) < TOLERANCE
    assert losses(two)[-1] < 0.8 * losses(two)[0]  # it learned
    assert two.trained_tokens == one.trained_tokens
    if method == "dpo":
        assert [m.train_reward_accuracy for m in two.history] == [m.train_reward_accuracy for m in one.history]


@pytest.mark.parametrize("training_type", ["lora", "full"])
def test_a_batch_smaller_than_the_processes_still_steps_as_one(tiny_model_dir, training_type):
    """Batches of 1 on 2 processes: each step one process has nothing to train on (it adds zeros;
    sharded, it runs an empty row beside the other's: a forward gathers weights with it)."""
    inputs = job(tiny_model_dir, training_type=training_type, n_epochs=1)
    inputs = replace(inputs, hyperparameters=replace(inputs.hyperparameters, batch_size=1))
    one = train(inputs, examples=COLOR_EXAMPLES[:5])
    two = train(inputs, TWO_CPUS, examples=COLOR_EXAMPLES[:5])
    assert len(two.history) == 5
    assert losses(two) == pytest.approx(losses(one), abs=TOLERANCE)


@pytest.mark.parametrize("stop_at", [4, 3])  # mid-epoch, and at an epoch's end
def test_checkpoints_of_two_processes_and_of_one_resume_on_the_other(tiny_model_dir, tmp_path, stop_at):
    straight = train(job(tiny_model_dir))
    # Stopped by rank 0's decision after stop_at: every rank stops there, rank 0 writes the checkpoint.
    from_two, from_one = tmp_path / "two", tmp_path / "one"
    from_two.mkdir(), from_one.mkdir()
    stopped = train(job(tiny_model_dir), TWO_CPUS, stop_at=stop_at, checkpoint=from_two)
    assert stopped.stopped and stopped.steps == stop_at
    train(job(tiny_model_dir), stop_at=stop_at, checkpoint=from_one)

    on_one = train(job(tiny_model_dir, resume_from=from_two))
    on_two = train(job(tiny_model_dir, resume_from=from_one), TWO_CPUS)
    for resumed in (on_one, on_two):
        assert [m.step for m in resumed.history] == list(range(1, 10))
        assert abs(losses(resumed)[-1] - losses(straight)[-1]) < TOLERANCE
        assert losses(resumed) == pytest.approx(losses(straight), abs=TOLERANCE)
        assert resumed.trained_tokens == straight.trained_tokens


def test_a_process_that_dies_fails_the_run_with_rank_lost(tiny_model_dir, tmp_path, monkeypatch):
    failpoints = tmp_path / "failpoints.json"
    failpoints.write_text(json.dumps({f"{distributed.RANK_STEP}=2": 1}))
    monkeypatch.setenv(ENVIRONMENT, str(failpoints))
    seen = []
    recipe = distributed.build("supervised", job(tiny_model_dir), TWO_CPUS)
    try:
        recipe.setup(COLOR_EXAMPLES)
        with pytest.raises(distributed.RankLost, match="training process 1 of 2 \\(cpu\\) was killed by SIGKILL"):
            recipe.train(lambda m: seen.append(m.step) or True)
    finally:
        recipe.cleanup()
    assert seen and max(seen) <= 3  # rank 0 could not go on past the step after rank 1 died
    assert json.loads(failpoints.read_text())[f"{distributed.RANK_STEP}=2"] == 0


def test_sharded_full_fine_tuning_validates_and_checkpoints_as_one_process(tiny_model_dir, tmp_path):
    """Full fine-tuning on 2 processes is sharded (FSDP2): the same losses and validation figures
    as one process, a checkpoint that is an ordinary Hugging Face folder with the weights of one
    process's checkpoint beside each process's part of the optimizer's state, and a run resumed
    from it (on 2 processes, and on 1) that goes on to the losses of the run that never stopped."""
    import torch
    from safetensors.torch import load_file

    inputs = job(tiny_model_dir, training_type="full")
    assert distributed.build("supervised", inputs, TWO_CPUS).ranks.sharded
    straight = train(inputs, valid=COLOR_EXAMPLES[:5])
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    sharded.mkdir(), single.mkdir()
    stopped = train(inputs, TWO_CPUS, valid=COLOR_EXAMPLES[:5], stop_at=4, checkpoint=sharded)
    train(inputs, valid=COLOR_EXAMPLES[:5], stop_at=4, checkpoint=single)
    assert losses(stopped) == pytest.approx(losses(straight)[:4], abs=TOLERANCE)
    assert [m.full_valid_loss for m in stopped.history] == pytest.approx(
        [m.full_valid_loss for m in straight.history[:4]], abs=TOLERANCE, nan_ok=True)

    assert sorted(p.name for p in (sharded / TRAINER_SHARDS).iterdir() if p.suffix == ".distcp") == [
        "__0_0.distcp", "__1_0.distcp"]
    mine, theirs = load_file(sharded / "model.safetensors"), load_file(single / "model.safetensors")
    assert mine.keys() == theirs.keys()
    assert all(torch.allclose(mine[k], theirs[k], atol=1e-4) for k in mine)

    for resumed in (train(job(tiny_model_dir, "supervised", "full", resume_from=sharded), TWO_CPUS),
                    train(job(tiny_model_dir, "supervised", "full", resume_from=sharded)),
                    train(job(tiny_model_dir, "supervised", "full", resume_from=single), TWO_CPUS)):
        assert [m.step for m in resumed.history] == list(range(1, 10))
        assert losses(resumed) == pytest.approx(losses(straight), abs=TOLERANCE)


def test_sharded_full_fine_tuning_of_a_lora_model_trains_as_one_process(tiny_model_dir, tmp_path):
    """Only rank 0 reads the weights (and merges the adapter the job continues from); the other
    rank builds the model's skeleton and receives its part: the losses are one process's."""
    lora = tmp_path / "lora"
    lora.mkdir()
    train(job(tiny_model_dir, n_epochs=1), checkpoint=lora)
    continued = replace(job(tiny_model_dir, training_type="full"), start=Weights("lora", tiny_model_dir, adapter=lora))
    one, two = train(continued), train(continued, TWO_CPUS)
    assert distributed.build("supervised", continued, TWO_CPUS).ranks.sharded
    assert losses(two) == pytest.approx(losses(one), abs=TOLERANCE)
    plain = train(job(tiny_model_dir, training_type="full"))
    assert losses(one)[0] < plain.history[0].train_loss - 0.1  # the adapter's training was there to go on from
