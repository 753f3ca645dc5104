""""auto" hyperparameters follow the guide's heuristic."""

from __future__ import annotations

import pytest

from tunery.training.hyperparameters import default_batch_size, default_epochs, resolve


@pytest.mark.parametrize("examples, epochs", [(10, 10), (12, 9), (34, 3), (100, 3), (8_333, 3), (10_000, 2),
                                              (30_000, 1), (2, 25)])
def test_epochs_keep_examples_times_epochs_within_100_to_25000(examples, epochs):
    assert default_epochs(examples) == epochs


def test_batch_size_grows_with_the_data_and_is_capped():
    assert default_batch_size(12) == 1
    assert default_batch_size(5_000) == 10
    assert default_batch_size(10_000_000) == 256


def test_on_a_cpu_auto_packs_several_examples_a_step_with_a_learning_rate_to_match():
    assert default_batch_size(12, "cpu") == 8 and default_batch_size(5, "cpu") == 5
    auto = resolve({}, 100, device_type="cpu")
    assert (auto.batch_size, auto.learning_rate_multiplier) == (8, 2.83)
    assert auto.learning_rate == pytest.approx(2.83e-3)
    chosen = resolve({"batch_size": 4}, 100, device_type="cpu")  # a batch the user chose keeps the plain rate
    assert (chosen.batch_size, chosen.learning_rate_multiplier) == (4, 1.0)
    assert resolve({"learning_rate_multiplier": 0.5}, 100, device_type="cpu").learning_rate_multiplier == 0.5
    assert resolve({}, 100, device_type="cuda").batch_size == 1  # GPUs keep OpenAI's rule


def test_given_numbers_win_over_auto():
    resolved = resolve({"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}, 12)
    assert (resolved.n_epochs, resolved.batch_size, resolved.learning_rate_multiplier) == (2, 1, 0.5)
    assert resolved.training_type == "lora"

def test_full_fine_tuning_uses_a_smaller_learning_rate_than_lora():
    assert resolve({"training_type": "full"}, 12).learning_rate < resolve({}, 12).learning_rate


def test_auto_learning_rate_shrinks_with_model_size():
    small, large = resolve({}, 100, 135_000_000), resolve({}, 100, 7_000_000_000)
    assert small.learning_rate == pytest.approx(1e-3)
    assert large.learning_rate == pytest.approx(1e-3 * (135 / 7000) ** 0.5)
    assert resolve({}, 100, 10_000_000).learning_rate == small.learning_rate  # never above the reference rate
    assert resolve({"learning_rate_multiplier": 2}, 100, 7_000_000_000).learning_rate == pytest.approx(2 * large.learning_rate)
