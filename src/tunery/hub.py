"""Base models from the Hugging Face hub by id ("Qwen/Qwen2.5-0.5B-Instruct"), through
huggingface_hub and its standard cache (HF_HOME or HF_HUB_CACHE say where; HF_TOKEN opens gated
models): a cached model is used from the cache; a missing one is downloaded into it when the
network allows (not under HF_HUB_OFFLINE), the weights as safetensors and the tokenizer only."""

from __future__ import annotations

import fnmatch
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import constants
from tqdm import tqdm

# What a model needs: its configs, tokenizer, chat template and weights (safetensors; .bin only
# for a repository without them). Not: other formats (GGUF, ONNX, ...), nor the "original/"
# checkpoints some repositories carry beside the Hugging Face one.
NEEDED = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
FALLBACK_WEIGHTS = ["*.bin"]
SKIPPED_FOLDERS = ("original/", "onnx/", "gguf/", "openvino/", "coreml/")
OTHER_TOOLS_WEIGHTS = ("consolidated",)  # Mistral's repositories: the same weights again, for mistral-inference
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")  # sharded weights: shard by tensor
SINGLE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")
PROGRESS_EVERY_SECONDS = 5.0  # a download's progress is reported at most this often

Progress = Callable[[int, int], None]  # (bytes so far, total bytes)


class HubError(Exception):
    """A model that cannot be had from the hub; the message names it and says why."""


def is_hub_id(name: str) -> bool:
    """An "owner/name" repository id (a bare name is a local model or an alias)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


def cached_folder(repo_id: str) -> Path | None:
    """The cached snapshot of the model's main revision, when it is whole: its config and every
    weight file (a download cut short, or still under way, leaves a snapshot without them)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(found, str):
        return None
    folder = Path(found).parent
    return folder if _weights_complete(folder) else None


def _weights_complete(folder: Path) -> bool:
    for index_name in INDEXES:
        if (index := folder / index_name).exists():
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError):
                return False
            return all((folder / shard).exists() for shard in shards)
    return any((folder / name).exists() for name in SINGLE_WEIGHTS)


def cached_models() -> list[str]:
    """The causal language models in the cache, by id."""
    from huggingface_hub import scan_cache_dir

    try:
        repos = scan_cache_dir().repos
    except Exception:  # no cache yet (CacheNotFound), or one being written
        return []
    found = []
    for repo in repos:
        if repo.repo_type != "model" or (folder := cached_folder(repo.repo_id)) is None:
            continue
        try:
            architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
        except (OSError, ValueError):
            continue
        if any(a.endswith(CAUSAL_LM_SUFFIXES) for a in architectures):
            found.append(repo.repo_id)
    return sorted(found)


def download(repo_id: str, progress: Progress | None = None, every: float = PROGRESS_EVERY_SECONDS) -> Path:
    """Fetch what the model needs into the cache (what is there already is not fetched again),
    telling progress(bytes, total) at most every `every` seconds; HubError when it cannot be had."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if offline():
        raise HubError(f"The model '{repo_id}' is not in the local Hugging Face cache, and downloads are off "
                       "(HF_HUB_OFFLINE).")
    try:
        files = HfApi().list_repo_files(repo_id)
        folder = snapshot_download(repo_id, allow_patterns=wanted_files(files),
                                   tqdm_class=_reporting(progress, every) if progress else None)
    except GatedRepoError:
        raise HubError(f"The model '{repo_id}' is gated: accept its licence on huggingface.co and set HF_TOKEN.") from None
    except RepositoryNotFoundError:
        raise HubError(f"The model '{repo_id}' does not exist on the Hugging Face hub (or is private: set HF_TOKEN).") from None
    except Exception as exc:  # refused or lost connections, HTTP errors, a full disk: said in one line
        raise HubError(f"The model '{repo_id}' could not be downloaded from the Hugging Face hub: "
                       f"{_reason(exc)}") from None
    if not (Path(folder) / "config.json").exists():
        raise HubError(f"'{repo_id}' has no config.json: it is not a transformers model.")
    return Path(folder)


def wanted_files(files: list[str]) -> list[str]:
    """The files of a repository worth downloading: the Hugging Face weights only (not, beside
    them, the "consolidated" single file some repositories also carry for other tools)."""
    kept = [f for f in files if not f.startswith(SKIPPED_FOLDERS + OTHER_TOOLS_WEIGHTS)]
    patterns = NEEDED + ([] if any(f.endswith(".safetensors") for f in kept) else FALLBACK_WEIGHTS)
    return [f for f in kept if any(fnmatch.fnmatch(f.rsplit("/", 1)[-1], p) for p in patterns)]


def _reason(exc: BaseException) -> str:
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:  # the connection error inside
        cause = cause.__cause__ or cause.__context__
    return str(cause).splitlines()[0][:300] if str(cause) else type(cause).__name__


def _reporting(progress: Progress, every: float) -> type:
    """A tqdm class for snapshot_download that hands its byte count to `progress` (at most every
    `every` seconds, and at the end) instead of drawing a bar."""

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "file": io.StringIO(), "disable": False})
            self._reported = 0.0

        def update(self, n=1):
            done = super().update(n)
            # Of the byte bars, the one of bytes written to the cache knows its total (the files' sizes).
            is_bytes = self.unit == "B" and "econstruct" in str(self.desc)
            if is_bytes and (time.monotonic() - self._reported >= every or self.n >= (self.total or 0) > 0):
                self._reported = time.monotonic()
                progress(int(self.n), int(self.total or 0))
            return done

    return Reporting
