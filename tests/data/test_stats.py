"""Token accounting with the real SmolLM2 tokenizer, and the checks that depend on the model."""

from __future__ import annotations

import json
import statistics

from tests.helpers import SAMPLE_DATA
from tunery.data.render import render_example
from tunery.data.stats import token_stats
from tunery.data.validate import Report, load_examples
from tunery.training.estimate import estimate_training

MARV = SAMPLE_DATA / "marv.jsonl"


def test_marv_statistics_match_the_rendered_examples(smol_tokenizer):
    report = Report()
    stats = token_stats(MARV, smol_tokenizer, 8192, report)
    rendered = [render_example(smol_tokenizer, e, max_length=8192) for e in load_examples(MARV)]
    tokens = [len(r.input_ids) for r in rendered]
    trained = [r.trained_tokens for r in rendered]
    assert report.ok and stats.examples == 12 and stats.too_long == 0
    assert stats.messages_per_example.min == stats.messages_per_example.max == 3
    assert (stats.tokens_per_example.min, stats.tokens_per_example.max) == (min(tokens), max(tokens))
    assert stats.tokens_per_example.median == statistics.median(tokens)
    assert stats.trained_tokens_per_example.mean == round(statistics.fmean(trained), 2)
    assert stats.tokens_per_example.p5 <= stats.tokens_per_example.median <= stats.tokens_per_example.p95
    assert stats.tokens == sum(tokens)
    cost = estimate_training(stats)  # counted, not measured
    assert cost.n_epochs == 9  # 12 examples: ceil(100 / 12)
    assert cost.billed_tokens == sum(tokens) * 9 and cost.estimated_seconds is None


def test_examples_over_the_context_are_warned_and_those_left_with_nothing_to_train_fail(smol_tokenizer, tmp_path):
    shorts = [{"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello"}]}
              for i in range(10)]
    long_answer = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 60}]}
    long_question = {"messages": [{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "Hello"}]}
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in shorts + [long_answer, long_question]))
    report = Report()
    stats = token_stats(path, smol_tokenizer, 50, report)
    assert stats.too_long == 2 and stats.examples == 11
    assert [(w.line, w.code) for w in report.warnings] == [(11, "too_long"), (12, "too_long")]
    assert [(e.line, e.code) for e in report.errors] == [(12, "nothing_to_train")]
    kept = [len(render_example(smol_tokenizer, e, max_length=50).input_ids) for e in shorts + [long_answer]]
    assert stats.tokens == sum(kept) and kept[-1] == 50


def test_prompt_completion_and_preference_data_are_counted(smol_tokenizer):
    report = Report()
    stats = token_stats(SAMPLE_DATA / "tickets_train.jsonl", smol_tokenizer, 8192, report)
    assert report.ok and stats.examples == 50 and stats.messages_per_example is None
    assert stats.trained_tokens_per_example.min >= 2  # a class token and end-of-text
