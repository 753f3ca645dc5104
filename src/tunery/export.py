"""A fine-tuned model's weights, taken away in the formats other tools read:

- "hf": the merged full model as a Hugging Face folder (AutoModelForCausalLM loads it);
- "adapter": the PEFT LoRA adapter, naming its base model (vLLM --lora-modules, PEFT);
- "gguf": the merged model as one GGUF file with its tokenizer and chat template (llama.cpp,
  Ollama), and an Ollama Modelfile beside it.

Free of HTTP and SQL: it takes the model's Weights and writes into a folder."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from tunery.weights import Weights

FORMATS = ("hf", "adapter", "gguf")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")
# GGUF: the architectures, by transformers' model_type, and llama.cpp's name for each.
GGUF_ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
# llama.cpp's names of byte-level BPE pre-tokenizers, by the sha256 of how they split CHECK_TEXT
# (the identification llama.cpp's converter makes; hashes from its convert_hf_to_gguf.py).
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
CHECK_TEXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ '
              '🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
              '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
              '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')


class ExportError(ValueError):
    """A model that cannot be written in the asked format; the message says why."""


def export(weights: Weights, fmt: str, out: Path, *, name: str, base_id: str) -> None:
    """Write the model into `out` (an empty folder). name: the model's name (ft:...); base_id:
    how others know its base model (a Hugging Face id where there is one)."""
    if fmt == "hf":
        export_hf(weights, out)
    elif fmt == "adapter":
        export_adapter(weights, out, base_id)
    elif fmt == "gguf":
        export_gguf(weights, out, name)
    else:
        raise ExportError(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")


# hf ----------------------------------------------------------------------------------------------
def merged(weights: Weights):
    """The model with its LoRA adapter merged into the weights (float32), and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(weights.folder, dtype=torch.float32)
    if weights.kind == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, weights.adapter).merge_and_unload()
    return model.eval(), AutoTokenizer.from_pretrained(weights.folder)


def export_hf(weights: Weights, out: Path) -> None:
    model, tokenizer = merged(weights)
    stored = json.loads((weights.folder / "config.json").read_text())
    dtype = stored.get("dtype") or stored.get("torch_dtype") or "float32"  # as the base model was stored
    model.to(getattr(torch, dtype) if isinstance(dtype, str) and hasattr(torch, dtype) else torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# adapter -----------------------------------------------------------------------------------------
def export_adapter(weights: Weights, out: Path, base_id: str) -> None:
    if weights.kind != "lora":
        raise ExportError("Only a LoRA fine-tune has an adapter: this model was fine-tuned in full "
                          "(export it as hf or gguf).")
    for name in ADAPTER_FILES:
        shutil.copyfile(weights.adapter / name, out / name)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_id  # what PEFT and vLLM load the adapter onto
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (weights.folder / name).exists():
            shutil.copyfile(weights.folder / name, out / name)


# gguf --------------------------------------------------------------------------------------------
def export_gguf(weights: Weights, out: Path, name: str) -> None:
    tokenizer = write_gguf(weights, out / "model.gguf", name)
    (out / "Modelfile").write_text(_modelfile(tokenizer))


def gguf_architecture(config: dict) -> str:
    """llama.cpp's name for the architecture of a model's config.json (ExportError when it has none)."""
    arch = GGUF_ARCHITECTURES.get(config.get("model_type"))
    if arch is None:
        raise ExportError(f"GGUF export writes {', '.join(sorted(set(GGUF_ARCHITECTURES)))} models; this one is "
                          f"{config.get('model_type')!r}: export it as hf and convert it with llama.cpp.")
    return arch


def write_gguf(weights: Weights, path: Path, name: str, *, with_tokenizer: bool = True):
    """The model (its LoRA adapter merged) as one GGUF file of float16 matrices with its tokenizer
    and chat template; returns the tokenizer. Without the tokenizer (serving feeds llama.cpp
    token ids) the file names only the vocabulary's size, so any tokenizer will do."""
    import gguf

    arch = gguf_architecture(json.loads((weights.folder / "config.json").read_text()))
    model, tokenizer = merged(weights)
    cfg = model.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    _add_rope_scaling(writer, rope)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if with_tokenizer:
        _add_tokenizer(writer, tokenizer, cfg.vocab_size)
    else:
        writer.add_tokenizer_model("none")
        writer.add_vocab_size(cfg.vocab_size)

    tensor_names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], cfg.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # llama.cpp reads the output projection from the embeddings
        target = tensor_names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ExportError(f"no GGUF name for the tensor {key}")
        data = tensor.float()
        if arch == "llama" and key.endswith(("q_proj.weight", "k_proj.weight")):
            # llama.cpp's llama rotates interleaved pairs, transformers rotates halves: reorder the rows.
            data = _interleave_rope_rows(data, heads if "q_proj" in key else kv_heads)
        array = data.numpy()
        writer.add_tensor(target, array.astype("float16") if array.ndim == 2 else array)
    if (factors := _llama3_rope_factors(model)) is not None:
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors)
    _write(writer)
    return tokenizer


def write_gguf_lora(adapter: Path, config: dict, path: Path) -> None:
    """A PEFT LoRA adapter as llama.cpp's GGUF LoRA adapter for the base model of `config`: each
    pair under the GGUF name of the matrix it adapts (lora_a: rank x in, lora_b: out x rank),
    PEFT's scaling folded into lora_b (so llama.cpp applies it at scale 1), the rows of lora_b
    for llama's query and key reordered as the base's were."""
    import gguf
    from safetensors.torch import load_file

    arch = gguf_architecture(config)
    settings = json.loads((adapter / "adapter_config.json").read_text())
    if settings.get("modules_to_save") or settings.get("use_dora") or settings.get("alpha_pattern"):
        raise ExportError("llama.cpp applies plain LoRA pairs of one alpha; this adapter also trains whole "
                          "modules, DoRA or per-module alphas.")
    tensor_names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config["num_hidden_layers"])
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    writer = gguf.GGUFWriter(path, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 0.0)  # no alpha: the scale is in lora_b already
    tensors = load_file(adapter / "adapter_model.safetensors")
    if unknown := [k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight"))]:
        raise ExportError(f"llama.cpp applies plain LoRA pairs; this adapter also holds {unknown[0]}")
    for key in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        target = tensor_names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise ExportError(f"no GGUF name for the adapted module {module}")
        rank = tensors[key].shape[0]
        short = module.rsplit(".", 1)[-1]
        scaling = settings["lora_alpha"] / (rank ** 0.5 if settings.get("use_rslora") else rank)  # as PEFT scales
        b = tensors[key.replace(".lora_A.", ".lora_B.")].float() * scaling
        if arch == "llama" and short in ("q_proj", "k_proj"):
            b = _interleave_rope_rows(b, heads if short == "q_proj" else kv_heads)
        writer.add_tensor(target + ".lora_a", tensors[key].float().contiguous().numpy())
        writer.add_tensor(target + ".lora_b", b.contiguous().numpy())
    _write(writer)


def _write(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _interleave_rope_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _add_rope_scaling(writer, rope: dict) -> None:
    """Linear and YaRN context extension as llama.cpp reads them (Llama 3's is written as
    per-frequency factors, _llama3_rope_factors); any other kind cannot be written faithfully."""
    import gguf

    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind in ("default", "llama3"):
        return
    if kind not in ("linear", "yarn"):
        raise ExportError(f"GGUF export does not write {kind!r} RoPE scaling; export this model as hf.")
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR if kind == "linear" else gguf.RopeScalingType.YARN)
    writer.add_rope_scaling_factor(float(rope["factor"]))
    if kind == "yarn" and rope.get("original_max_position_embeddings"):
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))


def _llama3_rope_factors(model):
    """Llama 3's RoPE scaling, as llama.cpp takes it: the factor dividing each frequency."""
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", "default") != "llama3":
        return None
    scaled = rotary.inv_freq.float()
    dim = scaled.shape[0] * 2
    rope = getattr(model.config, "rope_parameters", None) or {}  # transformers 5; rope_theta before
    theta = float(rope.get("rope_theta", getattr(model.config, "rope_theta", 10000.0)))
    plain = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    return (plain / scaled).numpy()


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """A byte-level BPE tokenizer (GPT-2 style) the way llama.cpp's converter writes one."""
    import gguf

    hashed = hashlib.sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    # SentencePiece-style BPE (Llama 2, Mistral, Gemma: byte fallback, "▁" for spaces) and byte-level
    # BPE whose pre-tokenizer llama.cpp does not know by its fingerprint would tokenize wrongly there.
    if not _byte_level(tokenizer) or hashed not in PRE_TOKENIZERS:
        raise ExportError("GGUF export writes the byte-level BPE tokenizers llama.cpp knows (SmolLM, Llama 3, "
                          "Qwen 2 and 3, GPT-2); this model's is not one of them: export it as hf and convert it "
                          "with llama.cpp's convert_hf_to_gguf.py.")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZERS[hashed])
    vocab = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in vocab:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(vocab[index])
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(vocab[index])
            types.append(gguf.TokenType.NORMAL)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory() as files:
        tokenizer.save_pretrained(files)
        special = gguf.SpecialVocab(files, load_merges=True, n_vocab=vocab_size)
        special.add_to_gguf(writer)
        if not special.chat_template and tokenizer.chat_template:
            writer.add_chat_template(tokenizer.chat_template)


def _default_system(tokenizer) -> str | None:
    """The system message a ChatML template writes when a conversation has none."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    head = "<|im_start|>system\n"
    if not rendered.startswith(head) or "<|im_end|>" not in rendered:
        return None
    return rendered[len(head):rendered.index("<|im_end|>")].strip() or None


def _byte_level(tokenizer) -> bool:
    """A fast BPE tokenizer that splits text into bytes first (GPT-2 style)."""
    if not tokenizer.is_fast or tokenizer.backend_tokenizer.model.__class__.__name__ != "BPE":
        return False
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(step.get("type") == "ByteLevel" for step in steps)


def _modelfile(tokenizer) -> str:
    """Ollama's Modelfile: the GGUF, its stop token, and for ChatML templates the template in
    Ollama's own syntax (Ollama reads others from the GGUF)."""
    lines = ["# Ollama: ollama create NAME -f Modelfile", "FROM ./model.gguf"]
    if "<|im_start|>" in (tokenizer.chat_template or ""):
        # Ollama hands the system message as .System and in .Messages: it is written once, and the
        # template's own default (SmolLM's, Qwen's) when a conversation has none, as training saw it.
        lines += ['TEMPLATE """{{- if .System }}<|im_start|>system',
                  '{{ .System }}<|im_end|>', '{{ end }}{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}',
                  "{{ .Content }}<|im_end|>", '{{ end }}{{ end }}<|im_start|>assistant', '"""',
                  'PARAMETER stop "<|im_end|>"']
        if default := _default_system(tokenizer):
            lines.append(f'SYSTEM """{default}"""')
    elif tokenizer.eos_token:
        lines.append(f"PARAMETER stop {json.dumps(tokenizer.eos_token)}")
    return "\n".join(lines) + "\n"
