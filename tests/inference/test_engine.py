"""The engine serves each fine-tuned model from its own adapter, on one shared base model, even
when adapters' folders have the same name (every job has a checkpoints/<job>/step-N)."""

from __future__ import annotations

from pathlib import Path

from tests.training.test_sft import PAIRS, train
from tunery.inference.engine import Engine, SamplingParams

ANIMALS = ["cat", "dog", "owl", "fox"]
GREEDY = SamplingParams(max_tokens=3, temperature=0)


def adapter(tiny_model_dir, folder: Path, answers: list[str]) -> Path:
    examples = [{"messages": [{"role": "user", "content": color}, {"role": "assistant", "content": said}]}
                for (color, _), said in zip(PAIRS, answers)] * 3
    recipe, result = train(tiny_model_dir, examples=examples)
    folder.mkdir(parents=True)
    recipe.save_checkpoint(folder, result.history[-1])
    recipe.cleanup()
    return folder


def test_adapters_with_the_same_folder_name_are_served_apart(tiny_model_dir, tmp_path):
    fruits = adapter(tiny_model_dir, tmp_path / "job-a" / "step-45", [fruit for _, fruit in PAIRS])
    animals = adapter(tiny_model_dir, tmp_path / "job-b" / "step-45", ANIMALS)
    engine = Engine(device="cpu")

    def ask(folder, color):
        return engine.chat(tiny_model_dir, folder, [{"role": "user", "content": color}], GREEDY).text

    for (color, fruit), animal in zip(PAIRS, ANIMALS):
        assert ask(fruits, color).startswith(fruit)
        assert ask(animals, color).startswith(animal)
        base = ask(None, color)  # the base model, with both adapters loaded but disabled
        assert not base.startswith(fruit) and not base.startswith(animal)
