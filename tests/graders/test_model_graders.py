"""Model graders through the official client: the judge is a model tunery serves, asked through
its chat service with the grader's sampling parameters. A fine-tuned (ft:) tiny model trained on
the colour task labels colours with their fruits; the embedded SmolLM2-135M-Instruct (its answers
below are what it writes, greedy) labels reviews and scores answers, and an answer without
a score in the range is a parse error. All slow: a judge trains, or the real model answers."""

from __future__ import annotations

import pytest

from tests.helpers import COLOR_EXAMPLES, TINY_MODEL, jsonl, upload, wait_until_finished
from tunery.catalog import EMBEDDED_MODEL


@pytest.fixture(scope="module")
def fruit_judge(tiny_server) -> str:
    """The tiny model fine-tuned to answer a colour with its fruit."""
    client = tiny_server.client()
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model=TINY_MODEL, training_file=upload(client, jsonl(COLOR_EXAMPLES), "colours.jsonl").id, suffix="judge",
        seed=0, hyperparameters={"n_epochs": 30, "batch_size": 4, "learning_rate_multiplier": 10}).id)
    assert job.status == "succeeded", job.error
    return job.fine_tuned_model


def fruit_labels(judge: str) -> dict:
    return {"type": "label_model", "name": "fruit", "model": judge, "input": [{"role": "user", "content": "{{item.colour}}"}],
            "labels": ["apple", "banana", "lime", "grape"], "passing_labels": ["apple", "grape"]}


@pytest.mark.slow  # the judge trains first (about a minute on 2 cores)
def test_a_fine_tuned_model_judges_with_its_labels(grade, fruit_judge):
    for colour, reward in (("red", 1.0), ("purple", 1.0), ("yellow", 0.0), ("green", 0.0)):
        result = grade(fruit_labels(fruit_judge), "ignored", {"colour": colour})
        assert result.reward == reward and not result.metadata.errors.model_grader_parse_error, colour
        assert result.metadata.sampled_model_name == fruit_judge and result.metadata.type == "label_model"
        usage = result.model_grader_token_usage_per_model[fruit_judge]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] == result.metadata.token_usage
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


@pytest.mark.slow
def test_a_judge_inside_a_multi_grader(grade, fruit_judge):
    grader = {"type": "multi", "name": "m", "calculate_output": "fruit + exact",
              "graders": {"fruit": fruit_labels(fruit_judge),
                          "exact": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                                    "reference": "apple", "operation": "eq"}}}
    result = grade(grader, "apple", {"colour": "red"})
    assert result.sub_rewards == {"fruit": 1.0, "exact": 1.0} and result.reward == 2.0
    assert result.metadata.sampled_model_name == fruit_judge and result.metadata.token_usage > 0


@pytest.mark.slow
def test_an_answer_that_is_no_label_is_a_parse_error(grade, fruit_judge):
    grader = fruit_labels(fruit_judge) | {"labels": ["cherry", "plum"], "passing_labels": ["cherry"]}
    result = grade(grader, "ignored", {"colour": "red"})  # the judge answers "apple"
    assert result.reward == 0.0 and result.metadata.errors.model_grader_parse_error
    assert result.metadata.token_usage > 0


REVIEW = [{"role": "user", "content": "Is this review positive or negative? Answer with one word.\n\n"
                                      "Review: {{sample.output_text}}"}]


@pytest.mark.slow
def test_smollm2_labels_reviews(grade, smol_server):
    grader = {"type": "label_model", "name": "sentiment", "model": EMBEDDED_MODEL, "input": REVIEW,
              "labels": ["positive", "negative"], "passing_labels": ["positive"]}
    client = smol_server.client()
    # It writes "This review is positive, as it ..." and "This review is negative."
    assert grade(grader, "I love this product, it works perfectly!", on=client).reward == 1.0
    negative = grade(grader, "Awful. Waste of money.", on=client)
    assert negative.reward == 0.0 and not negative.metadata.errors.model_grader_parse_error
    assert negative.metadata.sampled_model_name == EMBEDDED_MODEL


@pytest.mark.slow
def test_smollm2_scores_answers_within_the_range(grade, smol_server):
    client = smol_server.client()
    grader = {"type": "score_model", "name": "quality", "model": EMBEDDED_MODEL, "range": [1, 5],
              "input": [{"role": "user", "content": "On a scale from 1 to 5, how good is this answer to the question "
                                                    "'{{item.question}}'? Answer: {{sample.output_text}}"}],
              "sampling_params": {"temperature": 0, "max_completions_tokens": 30}}
    # "The answer to this question is 5." and "This answer is 4 out of 5, which is a perfect 5."
    assert grade(grader, "Paris", {"question": "What is the capital of France?"}, on=client).reward == 5.0
    four = grade(grader, "4", {"question": "What is 2+2?"}, on=client)
    assert four.reward == 4.0 and four.metadata.scores == {"quality": 4.0}
    assert 0 < four.model_grader_token_usage_per_model[EMBEDDED_MODEL]["completion_tokens"] <= 30
    # "Paris is the capital of France.": no number, no score.
    unscored = grader | {"range": [0, 1], "input": [{"role": "system", "content": "Rate the answer from 0 to 10."},
                                                    {"role": "user", "content": "Question: {{item.question}}\n"
                                                                                "Answer: {{sample.output_text}}"}],
                         "sampling_params": {"max_completions_tokens": 16}}
    result = grade(unscored, "Paris", {"question": "What is the capital of France?"}, on=client)
    assert result.reward == 0.0 and result.metadata.errors.model_grader_parse_error
