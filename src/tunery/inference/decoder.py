"""The decoder: a compact forward pass for Llama-family models (Llama 2/3, Mistral, Qwen2/2.5,
Qwen3, SmolLM2) built from a Hugging Face model's weights, over a KV cache of fixed slots. Other
architectures are served by generic.GenericDecoder.

One decode step runs every sequence of the model together, each at its own position and each
with its own LoRA adapter or none: the base weights are read once for the whole batch, which is
what decoding on a CPU is bound by. The projections are fused (q/k/v in one matrix, gate/up in
another), the cache is written in place, and no work is done that a decode step does not need
(no masks built from scratch per layer, no cache concatenation), so a step costs little more
than reading the weights.

The KV cache is one block of slots x positions: it grows (doubling) as sequences reserve room,
never past kv_cache_bytes (TUNERY_KV_CACHE_MB; a sequence that does not fit beside the others
waits), and shrinks back when the sequences that needed it end."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tunery.inference.types import UnsupportedModel

SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")
INITIAL_SLOTS, INITIAL_CAPACITY = 4, 256  # the KV cache grows (doubling) as sequences need, and shrinks back to this
KV_CACHE_BYTES = 1 << 30  # a decoder's KV cache at most, unless TUNERY_KV_CACHE_MB says otherwise
SHRINK_BELOW = 4  # the cache shrinks once what its sequences reserve needs a quarter of it (not at every end: no churn)
NARROW_ROWS = 4  # rows a bfloat16 matrix multiplies itself on a CPU without native bfloat16 (measured on AVX2)
WIDE_COPY_MAX_BYTES = 2 << 30  # below this, a float32 copy of the weights is kept beside the bfloat16 one
VARYING_ROPE = ("dynamic", "longrope")  # RoPE whose frequencies change with the length: not precomputed here


def supports(config: dict) -> bool:
    """Whether a model's config.json describes an architecture the decoder runs."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}  # the name since transformers 5, before
    return (config.get("model_type") in SUPPORTED_TYPES and config.get("hidden_act", "silu") == "silu"
            and (rope.get("rope_type") or rope.get("type")) not in VARYING_ROPE)


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")  # by family


def kv_bytes_per_token(config: dict, element_bytes: int) -> int:
    """A token's keys and values in every layer of a model of this config.json."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return config["num_hidden_layers"] * 2 * (config.get("num_key_value_heads") or heads) * head_dim * element_bytes


def serving_context(config: dict) -> int:
    """The longest sequence served: the model's context, or its sliding attention window when
    that is shorter (within the window, sliding attention is plain attention)."""
    context = next((config[key] for key in CONTEXT_KEYS if config.get(key)), 2048)
    window = config.get("sliding_window")
    if window and config.get("use_sliding_window", config.get("model_type") == "mistral"):
        context = min(context, window)
    return context


class _Matrix:
    """A weight matrix, kept in the dtypes it is multiplied in. On a CPU without native bfloat16
    a decode step of one stream reads every weight once and is bound by memory: half the bytes
    (bfloat16) nearly double its speed; but bfloat16 arithmetic there costs more with every row,
    so more rows (several streams, a prompt) are multiplied by a float32 copy when the model is
    small enough to keep both (WIDE_COPY_MAX_BYTES), or by widening the bfloat16 one."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, weights_dtype: torch.dtype, device: torch.device,
                 keep_wide: bool):
        self.narrow = weight.detach().to(weights_dtype).to(device).contiguous()
        self.wide = None
        if weights_dtype != dtype and keep_wide:
            self.wide = self.narrow.to(dtype)  # the same (rounded) weights, whichever path multiplies

    @property
    def shape(self) -> torch.Size:
        return self.narrow.shape

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.narrow, self.wide) if t is not None)

    def rows(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """An embedding lookup."""
        return (self.wide if self.wide is not None else self.narrow)[ids].to(dtype)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x @ weight.T (+ bias), in x's dtype."""
        weight = self.narrow
        if weight.dtype != x.dtype:
            if x.numel() // x.shape[-1] <= NARROW_ROWS:
                out = F.linear(x.to(weight.dtype), weight).to(x.dtype)
                return out if bias is None else out + bias
            weight = self.wide if self.wide is not None else weight.to(x.dtype)
        return F.linear(x, weight, bias)


@dataclass
class _Layer:
    ln1: torch.Tensor
    ln2: torch.Tensor
    qkv: _Matrix  # [q + k + v outputs, hidden]
    qkv_bias: torch.Tensor | None
    o: _Matrix
    gate_up: _Matrix  # [2 * intermediate, hidden]
    down: _Matrix
    q_norm: torch.Tensor | None = None  # Qwen3: RMSNorm of each head's query and key before RoPE
    k_norm: torch.Tensor | None = None


@dataclass
class _LoraPair:
    a: torch.Tensor  # [rank (summed over fused projections), in]
    b: torch.Tensor  # [out, rank], the LoRA scale folded in


class Adapter:
    """A PEFT LoRA adapter in the decoder's fused layout: per layer and projection group
    ("qkv", "o", "gate_up", "down") one low-rank pair, None where the adapter has none."""

    def __init__(self, folder: Path, decoder: Decoder):
        from safetensors.torch import load_file

        config = json.loads((folder / "adapter_config.json").read_text())
        rank, alpha = config["r"], config["lora_alpha"]
        scale = alpha / (rank ** 0.5) if config.get("use_rslora") else alpha / rank
        weights = load_file(folder / "adapter_model.safetensors")
        by_module: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for key, tensor in weights.items():
            parts = key.split(".")
            if "layers" not in parts or parts[-2] not in ("lora_A", "lora_B"):
                raise UnsupportedModel(f"adapter weight {key} is not a LoRA matrix of a decoder layer")
            layer = int(parts[parts.index("layers") + 1])
            by_module.setdefault((layer, parts[-3]), {})[parts[-2]] = tensor.float()
        groups = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",),
                  "gate_up": ("gate_proj", "up_proj"), "down": ("down_proj",)}
        self.layers: list[dict[str, _LoraPair | None]] = []
        for index in range(len(decoder.layers)):
            fused = {}
            for group, modules in groups.items():
                sizes = [decoder.out_features[m] for m in modules]
                present = [(i, by_module.get((index, m))) for i, m in enumerate(modules)]
                present = [(i, pair) for i, pair in present if pair]
                if not present:
                    fused[group] = None
                    continue
                a = torch.cat([pair["lora_A"] for _, pair in present])
                b = torch.zeros(sum(sizes), a.shape[0])
                column = 0
                for i, pair in present:  # block-diagonal: each projection's B reads its own A rows
                    start, r = sum(sizes[:i]), pair["lora_A"].shape[0]
                    b[start:start + sizes[i], column:column + r] = pair["lora_B"] * scale
                    column += r
                fused[group] = _LoraPair(a.to(decoder.dtype).to(decoder.device), b.to(decoder.dtype).to(decoder.device))
            self.layers.append(fused)
        self.bytes = sum(p.a.numel() * p.a.element_size() + p.b.numel() * p.b.element_size()
                         for layer in self.layers for p in layer.values() if p is not None)


class Decoder:
    def __init__(self, folder: Path, *, dtype: torch.dtype, device: torch.device, weights_dtype: torch.dtype | None = None,
                 kv_cache_bytes: int = KV_CACHE_BYTES):
        """dtype: what it computes in (activations, KV cache, adapters); weights_dtype: what its
        weight matrices are kept in (the same by default; bfloat16 under float32: see _Matrix);
        kv_cache_bytes: the most its KV cache may hold."""
        from transformers import AutoModelForCausalLM

        config = json.loads((folder / "config.json").read_text())
        if not supports(config):
            raise UnsupportedModel(f"{folder.name}: the decoder serves Llama-family models ({', '.join(SUPPORTED_TYPES)})")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        cfg = model.config
        self.dtype, self.device = dtype, device
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.hidden = cfg.hidden_size
        self.eps = cfg.rms_norm_eps
        self.context = serving_context(config)

        self.weights_dtype = weights_dtype or dtype

        def prepared(t: torch.Tensor) -> torch.Tensor:  # norms and biases: small, in the compute dtype
            return t.detach().to(dtype).to(device).contiguous()

        wide_bytes = sum(p.numel() for p in model.parameters()) * torch.finfo(dtype).bits // 8
        keep_wide = wide_bytes <= WIDE_COPY_MAX_BYTES

        def matrix(t: torch.Tensor) -> _Matrix:
            return _Matrix(t, dtype, self.weights_dtype, device, keep_wide)

        self.layers = []
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            biases = [p.bias for p in (attn.q_proj, attn.k_proj, attn.v_proj)]
            self.layers.append(_Layer(
                ln1=prepared(layer.input_layernorm.weight), ln2=prepared(layer.post_attention_layernorm.weight),
                qkv=matrix(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])),
                qkv_bias=prepared(torch.cat(biases)) if all(b is not None for b in biases) else None,
                o=matrix(attn.o_proj.weight),
                gate_up=matrix(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])), down=matrix(mlp.down_proj.weight),
                q_norm=prepared(attn.q_norm.weight) if hasattr(attn, "q_norm") else None,
                k_norm=prepared(attn.k_norm.weight) if hasattr(attn, "k_norm") else None))
        first = model.model.layers[0]
        self.out_features = {name: getattr(module, name).out_features for module in (first.self_attn, first.mlp)
                             for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
                             if hasattr(module, name)}
        self.embed = matrix(model.model.embed_tokens.weight)
        self.norm = prepared(model.model.norm.weight)
        self.lm_head = self.embed if cfg.tie_word_embeddings else matrix(model.lm_head.weight)
        rotary = model.model.rotary_emb  # its inv_freq carries the model's RoPE scaling, whatever its kind
        self.inv_freq = rotary.inv_freq.float().to(device)
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        self.vocab = self.lm_head.shape[0]
        matrices = [p for layer in self.layers for p in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        matrices += [self.embed] if self.lm_head is self.embed else [self.embed, self.lm_head]
        self.weight_bytes = sum(m.bytes for m in matrices)
        del model
        self.kv_cache_bytes = kv_cache_bytes
        self.token_bytes = kv_bytes_per_token(config, dtype.itemsize)
        self._reserved: dict[int, int] = {}  # slot -> the positions its sequence may reach
        self.slots, self.capacity = 0, 0
        self._resize(*self._initial_shape())

    # adapters ----------------------------------------------------------------------------------
    def load_adapter(self, folder: Path) -> Adapter:
        return Adapter(folder, self)

    def release_adapter(self, adapter: Adapter) -> None:
        """Nothing to undo: an adapter is its own tensors, gone with it."""

    # the KV cache ------------------------------------------------------------------------------
    @property
    def cache_bytes(self) -> int:
        """The KV cache allocated now (keys and values of every slot and position)."""
        return self.slots * self.capacity * self.token_bytes

    def reserve(self, slot: int, length: int) -> bool:
        """Make room for `length` positions in `slot` and keep it for that slot until free(): the
        cache grows (doubling, up to the context) as far as kv_cache_bytes allows; False when it
        cannot hold this beside what the other slots reserved."""
        needs = {**self._reserved, slot: length}
        shape = self._shape(max(needs) + 1, max(needs.values()))
        if shape is None:
            return False
        self._reserved[slot] = length
        if max(needs) >= self.slots or length > self.capacity:
            self._resize(*shape)
        return True

    def free(self, slot: int) -> None:
        """The slot's room goes back; the cache shrinks once it is idle, or when what is still
        reserved needs a small part of it (its memory goes back to the allocator)."""
        self._reserved.pop(slot, None)
        if not self._reserved:
            shape = self._initial_shape()
        else:
            shape = self._shape(max(self._reserved) + 1, max(self._reserved.values()))
            if shape[0] * shape[1] * SHRINK_BELOW > self.slots * self.capacity:
                return
        if shape != (self.slots, self.capacity):
            self._resize(*shape)

    def _initial_shape(self) -> tuple[int, int]:
        """What an idle decoder keeps: INITIAL_SLOTS x INITIAL_CAPACITY, or one position under a tiny bound."""
        return self._shape(1, 1) or (1, 1)

    def _shape(self, slots: int, length: int) -> tuple[int, int] | None:
        """(slots, positions) for these needs: powers of two (fewer reallocations as sequences
        come), or exactly the needs when those would pass kv_cache_bytes; None when even they do."""
        rounded = (max(INITIAL_SLOTS, 1 << (slots - 1).bit_length()),
                   min(self.context, max(INITIAL_CAPACITY, 1 << (length - 1).bit_length())))
        for shape in (rounded, (slots, length)):
            if shape[0] * shape[1] * self.token_bytes <= self.kv_cache_bytes:
                return shape
        return None

    def _resize(self, slots: int, capacity: int) -> None:
        """A cache of this shape, holding what the old one held where both have room."""
        shape = (len(self.layers), slots, self.kv_heads, capacity, self.head_dim)
        keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
        values = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self.slots:
            kept_slots, kept = min(slots, self.slots), min(capacity, self.capacity)
            keys[:, :kept_slots, :, :kept] = self.keys[:, :kept_slots, :, :kept]
            values[:, :kept_slots, :, :kept] = self.values[:, :kept_slots, :, :kept]
        self.keys, self.values, self.slots, self.capacity = keys, values, slots, capacity
        positions = torch.arange(capacity, device=self.device).float()
        angles = torch.outer(positions, self.inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos = (angles.cos() * self.rope_scale).to(self.dtype)
        self.sin = (angles.sin() * self.rope_scale).to(self.dtype)

    # forward -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, slot: int, ids: list[int], adapter: Adapter | None, *, all_logits: bool = False) -> torch.Tensor:
        """Run a prompt into `slot`; the logits of its last position ([1, vocab]) or of every one."""
        if slot >= self.slots or len(ids) > self.capacity:  # a caller that reserved no room (the engine does)
            if not self.reserve(slot, len(ids)):
                raise RuntimeError(f"no room for {len(ids)} positions in the KV cache ({self.kv_cache_bytes} bytes)")
        tokens = torch.tensor([ids], device=self.device)
        positions = torch.arange(len(ids), device=self.device)
        hidden = self._layers(tokens, positions[None], torch.tensor([slot], device=self.device),
                              [(adapter, None)], prefill=True)
        return self._logits(hidden[0] if all_logits else hidden[0, -1:])

    @torch.inference_mode()
    def decode(self, tokens: list[int], positions: list[int], adapters: list[tuple[Adapter | None, list[int]]]) -> torch.Tensor:
        """One step for slots 0..len(tokens)-1 (a free slot gets a placeholder token): each slot
        takes its token at its position and attends to its own cache. adapters: (adapter, slot
        rows using it). Returns logits [slots, vocab]."""
        ids = torch.tensor(tokens, device=self.device)[:, None]
        where = torch.tensor(positions, device=self.device)
        groups = [(adapter, torch.tensor(rows, device=self.device)) for adapter, rows in adapters if adapter is not None]
        hidden = self._layers(ids, where[:, None], torch.arange(len(tokens), device=self.device), groups, prefill=False)
        return self._logits(hidden[:, -1])

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(F.rms_norm(hidden, (self.hidden,), self.norm, self.eps)).float()

    def _layers(self, ids, positions, slots, adapters, *, prefill: bool) -> torch.Tensor:
        batch, length = ids.shape
        heads, kv, dim = self.heads, self.kv_heads, self.head_dim
        x = self.embed.rows(ids, self.dtype)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]  # [batch, 1, length, dim]
        if prefill:
            span = slice(0, length)
            mask = None
        else:
            span = slice(0, int(positions.max()) + 1)
            mask = (torch.arange(span.stop, device=self.device)[None] <= positions)[:, None, None]
        rows = slots[:, None]
        for index, layer in enumerate(self.layers):
            lora = [(a.layers[index] if a is not None else None, r) for a, r in adapters]
            h = F.rms_norm(x, (self.hidden,), layer.ln1, self.eps)
            qkv = self._linear(h, layer.qkv, lora, "qkv", layer.qkv_bias).view(batch, length, heads + 2 * kv, dim)
            qkv = qkv.transpose(1, 2)
            qk = qkv[:, :heads + kv]
            if layer.q_norm is not None:
                qk = torch.cat([F.rms_norm(qk[:, :heads], (dim,), layer.q_norm, self.eps),
                                F.rms_norm(qk[:, heads:], (dim,), layer.k_norm, self.eps)], dim=1)
            first, second = qk.chunk(2, dim=-1)
            qk = qk * cos + torch.cat([-second, first], dim=-1) * sin
            q, k, v = qk[:, :heads], qk[:, heads:], qkv[:, heads + kv:]
            if prefill:
                self.keys[index, slots, :, span] = k
                self.values[index, slots, :, span] = v
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                self.keys[index, rows, :, positions] = k.transpose(1, 2)
                self.values[index, rows, :, positions] = v.transpose(1, 2)
                out = F.scaled_dot_product_attention(q, self.keys[index, :batch, :, span], self.values[index, :batch, :, span],
                                                     attn_mask=mask, enable_gqa=True)
            x = x + self._linear(out.transpose(1, 2).reshape(batch, length, heads * dim), layer.o, lora, "o")
            h = F.rms_norm(x, (self.hidden,), layer.ln2, self.eps)
            gate, up = self._linear(h, layer.gate_up, lora, "gate_up").chunk(2, dim=-1)
            x = x + self._linear(F.silu(gate) * up, layer.down, lora, "down")
        return x

    @staticmethod
    def _linear(x, weight: _Matrix, lora, group: str, bias=None) -> torch.Tensor:
        out = weight(x, bias)
        for layer, rows in lora:
            pair = layer[group] if layer is not None else None
            if pair is None:
                continue
            if rows is None or rows.numel() == x.shape[0]:
                out = out + F.linear(F.linear(x, pair.a), pair.b)
            else:
                out.index_add_(0, rows, F.linear(F.linear(x[rows], pair.a), pair.b))
        return out
