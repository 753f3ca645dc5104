"""hub.py without a hub: which files of a repository are fetched, download progress as a job
reports it, models found in a cache the test writes, and `tunery models pull`."""

from __future__ import annotations

import os

from typer.testing import CliRunner

from tests.helpers import write_hub_model
from tunery import hub
from tunery.cli import app


def test_only_what_a_model_needs_is_downloaded():
    files = ["config.json", "generation_config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
             "tokenizer.json", "tokenizer_config.json", "merges.txt", "vocab.json", "chat_template.jinja",
             "pytorch_model.bin", "original/consolidated.00.pth", "original/params.json", "onnx/model.onnx",
             "model-q4.gguf", "README.md", ".gitattributes"]
    assert hub.wanted_files(files) == ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
                                       "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                                       "merges.txt", "vocab.json", "chat_template.jinja"]
    assert "pytorch_model.bin" in hub.wanted_files(["config.json", "pytorch_model.bin"])  # no safetensors: .bin
    # Mistral's repositories carry the weights twice: the Hugging Face shards, and one file for other tools.
    assert hub.wanted_files(["config.json", "consolidated.safetensors", "model-00001-of-00001.safetensors"]) == [
        "config.json", "model-00001-of-00001.safetensors"]


def test_download_progress_is_reported_in_bytes_of_the_total():
    reported = []
    bar = hub._reporting(lambda done, total: reported.append((done, total)), every=0)(
        desc="Reconstructing (incomplete total...)", unit="B", total=0)
    bar.total = 1000
    for _ in range(4):
        bar.update(250)
    assert reported == [(250, 1000), (500, 1000), (750, 1000), (1000, 1000)]
    files = hub._reporting(lambda done, total: reported.append("files"), every=0)(desc="Fetching 3 files", total=3)
    files.update(1)  # the count of files is not a byte count: not reported
    assert reported[-1] == (1000, 1000)


def test_a_model_in_the_cache_is_found_and_pull_says_it_is_here(tiny_architectures, tmp_path):
    write_hub_model(os.environ["HF_HOME"], "tunery-test/pulled", tiny_architectures["phi3"])
    assert "tunery-test/pulled" in hub.cached_models()
    assert (hub.cached_folder("tunery-test/pulled") / "config.json").exists()
    result = CliRunner().invoke(app, ["models", "pull", "tunery-test/pulled", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "is here already" in result.output


def test_pull_without_a_network_is_one_line_and_a_non_zero_exit(tmp_path):
    result = CliRunner().invoke(app, ["models", "pull", "tunery-test/not-here", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: The model 'tunery-test/not-here' is not in the local Hugging Face cache")
    assert len(result.output.strip().splitlines()) == 1


def test_a_snapshot_without_all_its_weights_is_not_a_cached_model(tiny_architectures, tmp_path):
    """A download cut short (or still under way) leaves the config without every shard: the model
    is not here yet, so a job or `tunery models pull` downloads it again."""
    import json
    import shutil

    sharded = tmp_path / "sharded"
    shutil.copytree(tiny_architectures["qwen3"], sharded)
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    (sharded / "model-00002-of-00002.safetensors").write_bytes(b"")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    snapshot = write_hub_model(os.environ["HF_HOME"], "tunery-test/sharded", sharded)
    assert hub.cached_folder("tunery-test/sharded") == snapshot
    (snapshot / "model-00002-of-00002.safetensors").unlink()  # the second shard never arrived
    assert hub.cached_folder("tunery-test/sharded") is None
    assert "tunery-test/sharded" not in hub.cached_models()
    result = CliRunner().invoke(app, ["models", "pull", "tunery-test/sharded", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1 and "not in the local Hugging Face cache" in result.output


def test_a_malformed_alias_setting_ends_a_command_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["models", "pull", "tunery-test/x", "--data-dir", str(tmp_path)],
                                env={"TUNERY_MODEL_ALIASES": "gpt-4o-mini=Qwen/Qwen2.5-0.5B-Instruct,gpt-4="})
    assert result.exit_code == 2
    assert result.output.strip() == "Error: TUNERY_MODEL_ALIASES: 'gpt-4=' is not alias=target"
