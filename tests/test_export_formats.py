"""GGUF export refuses what llama.cpp would read wrongly, rather than write a file that answers
badly: a SentencePiece-style tokenizer (byte fallback, "▁" for spaces, as Llama 2 and Mistral
have), and RoPE scaling it has no field for; linear scaling is written as llama.cpp reads it."""

from __future__ import annotations

import json
import shutil

import pytest

from tunery.export import ExportError, export
from tunery.weights import Weights


def _metaspace_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "a": 4, "b": 5, "▁a": 6}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "a")], unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_a_sentencepiece_style_tokenizer_is_refused_with_what_to_do(tmp_path, tiny_model_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "llama2-like"
    LlamaForCausalLM(LlamaConfig(vocab_size=7, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(folder)
    _metaspace_tokenizer().save_pretrained(folder)
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportError, match="convert_hf_to_gguf.py"):
        export(Weights("base", folder), "gguf", tmp_path / "out", name="m", base_id="m")


@pytest.mark.parametrize(("scaling", "refused"), [({"rope_type": "linear", "factor": 2.0}, False),
                                                  ({"rope_type": "dynamic", "factor": 2.0}, True)])
def test_rope_scaling_is_written_or_refused(scaling, refused, tmp_path, tiny_model_dir):
    import gguf

    folder = tmp_path / "scaled"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["rope_scaling"] = scaling
    config.pop("rope_parameters", None)
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    if refused:
        with pytest.raises(ExportError, match="'dynamic' RoPE scaling"):
            export(Weights("base", folder), "gguf", out, name="m", base_id="m")
        return
    export(Weights("base", folder), "gguf", out, name="m", base_id="m")
    fields = gguf.GGUFReader(out / "model.gguf").fields
    assert bytes(fields["llama.rope.scaling.type"].parts[-1]).decode() == "linear"
    assert float(fields["llama.rope.scaling.factor"].parts[-1][0]) == 2.0
