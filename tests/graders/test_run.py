"""graders.run through the official client: string_check, text_similarity and multi graders on
known inputs give known rewards; templates read nested item fields, list positions and the
sample's JSON; a variable that is not there is an error flag with reward 0, never a failure."""

from __future__ import annotations

import openai
import pytest
from openai.types.fine_tuning.alpha import GraderRunResponse

from tests.helpers import key_for


def check(grader: dict, operation: str, reference: str = "{{item.answer}}") -> dict:
    return {"type": "string_check", "name": grader, "input": "{{sample.output_text}}", "reference": reference,
            "operation": operation}


def similar(metric: str, reference: str = "{{item.answer}}", name: str = "similar") -> dict:
    return {"type": "text_similarity", "name": name, "input": "{{sample.output_text}}", "reference": reference,
            "evaluation_metric": metric}


def no_errors(result: GraderRunResponse) -> bool:
    errors = result.metadata.errors.model_dump(by_alias=True)
    return not any(v for k, v in errors.items() if not k.endswith(("_details", "_type")))


@pytest.mark.parametrize("operation, sample, answer, reward", [
    ("eq", "Paris", "Paris", 1.0),
    ("eq", "Paris", "paris", 0.0),  # a mismatch
    ("ne", "Paris", "Berlin", 1.0),
    ("ne", "Paris", "Paris", 0.0),
    ("like", "The capital is Paris.", "Paris", 1.0),  # like: the sample contains the reference
    ("like", "The capital is paris.", "Paris", 0.0),  # ... with its case
    ("ilike", "THE CAPITAL IS PARIS.", "paris", 1.0),  # ilike: ignoring case
    ("ilike", "The capital is Rome.", "paris", 0.0),
])
def test_string_check(grade, operation, sample, answer, reward):
    result = grade(check("exact", operation), sample, {"answer": answer})
    assert isinstance(result, GraderRunResponse)
    assert result.reward == reward and no_errors(result)
    assert result.metadata.name == "exact" and result.metadata.type == "string_check"
    assert result.metadata.scores == {"exact": reward} and result.sub_rewards == {}
    assert result.metadata.token_usage is None and result.metadata.sampled_model_name is None
    assert 0 <= result.metadata.execution_time < 5


@pytest.mark.parametrize("metric, sample, answer, reward", [
    ("bleu", "the cat sat on the mat", "the cat sat on the mat", 1.0),  # identical strings
    ("bleu", "Paris", "Paris", 1.0),  # shorter than BLEU's 4-grams, still identical
    ("bleu", "a dog barked", "the cat sat", 0.0),
    ("gleu", "the cat sat on the mat", "the cat sat on the mat", 1.0),
    ("fuzzy_match", "kitten", "sitting", 1 - 5 / 13),  # Indel distance 5 over 13 characters
    ("fuzzy_match", "same", "same", 1.0),
    ("rouge_1", "the cat sat", "the cat ran", 2 / 3),
    ("rouge_2", "the cat sat", "the cat ran", 1 / 2),
    ("rouge_l", "the cat sat", "the cat ran", 2 / 3),
    ("rouge_5", "one two three four five six", "one two three four five seven", 1 / 2),
    ("meteor", "the cat sat down", "the cat sat down", 1 - 0.5 * (1 / 4) ** 3),  # one chunk of 4 matches
    ("meteor", "the cats sat", "the cat sat", 1 - 0.5 * (1 / 3) ** 3),  # "cats" matches "cat" by its stem
])
def test_text_similarity(grade, metric, sample, answer, reward):
    result = grade(similar(metric), sample, {"answer": answer})
    assert result.reward == pytest.approx(reward) and no_errors(result)
    assert result.metadata.type == "text_similarity"


def test_bleu_of_a_partial_match_lies_between_none_and_all(grade):
    partial = grade(similar("bleu"), "the cat sat on a mat", {"answer": "the cat sat on the mat"}).reward
    assert 0.3 < partial < 0.9


def test_cosine_needs_an_embedding_model_and_says_so(grade):
    with pytest.raises(openai.BadRequestError) as refused:
        grade(similar("cosine"), "x", {"answer": "x"})
    assert refused.value.body["param"] == "grader.evaluation_metric"
    assert "embedding model" in refused.value.body["message"]


def test_a_multi_grader_combines_its_graders_as_its_formula_writes(grade):
    grader = {"type": "multi", "name": "combined", "calculate_output": "0.5 * exact + 0.25 * close ^ 2 + min(1, 2)",
              "graders": {"exact": check("exact", "eq"), "close": similar("fuzzy_match", name="close")}}
    result = grade(grader, "kitten", {"answer": "sitting"})
    close = 1 - 5 / 13
    assert result.sub_rewards == {"exact": 0.0, "close": pytest.approx(close)}
    assert result.reward == pytest.approx(0.5 * 0 + 0.25 * close ** 2 + 1)
    assert result.metadata.type == "multi" and result.metadata.scores == result.sub_rewards and no_errors(result)
    clipped = grade(grader | {"calculate_output": "clip(exact + 2 * close, 0, 1) - abs(-0.5) + sqrt(4) * log(exp(1))"},
                    "sitting", {"answer": "sitting"})
    assert clipped.reward == pytest.approx(1 - 0.5 + 2)


def test_a_multi_grader_of_one_grader_as_the_sdk_types_it(grade):
    grader = {"type": "multi", "name": "one", "calculate_output": "1 - exact", "graders": check("exact", "eq")}
    assert grade(grader, "Paris", {"answer": "Paris"}).reward == 0.0
    assert grade(grader, "Rome", {"answer": "Paris"}).sub_rewards == {"exact": 0.0}


def test_a_formula_without_a_value_is_a_formula_error_with_reward_0(grade):
    grader = {"type": "multi", "name": "m", "calculate_output": "1 / exact", "graders": {"exact": check("exact", "eq")}}
    result = grade(grader, "Rome", {"answer": "Paris"})
    assert result.reward == 0.0 and result.metadata.errors.formula_parse_error


def test_templates_read_nested_item_fields_list_positions_and_the_samples_json(grade):
    item = {"order": {"customer": {"name": "Ada"}, "lines": [{"sku": "A-1"}, {"sku": "B-2"}]}, "total": 42}
    grader = {"type": "multi", "name": "order", "calculate_output": "name + sku + total",
              "graders": {"name": check("name", "eq", "{{item.order.customer.name}}")
                          | {"input": "{{sample.output_json.customer}}"},
                          "sku": check("sku", "eq", "{{ item.order.lines[1].sku }}")
                          | {"input": "{{sample.output_json.skus[1]}}"},
                          "total": check("total", "eq", "{{item.total}}") | {"input": "{{sample.output_json.total}}"}}}
    result = grade(grader, '{"customer": "Ada", "skus": ["A-1", "B-2"], "total": 42}', item)
    assert result.sub_rewards == {"name": 1.0, "sku": 1.0, "total": 1.0} and result.reward == 3.0
    wrong = grade(grader, '{"customer": "Bob", "skus": ["A-1", "A-1"], "total": 42}', item)
    assert wrong.sub_rewards == {"name": 0.0, "sku": 0.0, "total": 1.0}
    text = grade(check("text", "eq", "{{item.order}}"), '{"customer": "Ada"}', {"order": {"customer": "Ada"}})
    assert text.reward == 1.0  # an object's value is its JSON


def test_a_variable_not_there_is_an_invalid_variable_error_with_reward_0(grade):
    result = grade(check("exact", "ne", "{{item.missing.deeper}}"), "x", {"answer": "y"})
    assert result.reward == 0.0 and result.metadata.errors.invalid_variable_error
    assert result.metadata.scores == {}
    beyond = grade(check("exact", "ne", "{{item.list[5]}}"), "x", {"list": [1]})
    assert beyond.metadata.errors.invalid_variable_error


def test_the_json_of_a_sample_that_is_no_json_is_a_sample_parse_error(grade):
    grader = check("exact", "eq") | {"input": "{{sample.output_json.answer}}"}
    result = grade(grader, "Paris, not JSON", {"answer": "Paris"})
    assert result.reward == 0.0 and result.metadata.errors.sample_parse_error


def test_a_multi_graders_failing_part_fails_it(grade):
    grader = {"type": "multi", "name": "m", "calculate_output": "a + b",
              "graders": {"a": check("a", "eq"), "b": check("b", "eq", "{{item.nothing}}")}}
    result = grade(grader, "Paris", {"answer": "Paris"})
    assert result.reward == 0.0 and result.metadata.errors.invalid_variable_error
    assert result.sub_rewards == {"a": 1.0}


def test_graders_need_a_key_and_judges_are_the_organizations_models(tiny_server, grade):
    keyless = tiny_server.client(api_key="sk-unknown")
    with pytest.raises(openai.AuthenticationError):
        grade(check("exact", "eq"), "x", {"answer": "x"}, on=keyless)
    with pytest.raises(openai.AuthenticationError):
        keyless.fine_tuning.alpha.graders.validate(grader=check("exact", "eq"))
    other = tiny_server.client(api_key=key_for(tiny_server, "another-org"))
    assert grade(check("exact", "eq"), "x", {"answer": "x"}, on=other).reward == 1.0
    judge = {"type": "score_model", "name": "s", "model": "ft:tiny-llama:default:mine:ftjob-unknown",
             "input": [{"role": "user", "content": "{{sample.output_text}}"}]}
    with pytest.raises(openai.BadRequestError) as refused:
        grade(judge, "x", on=other)
    assert refused.value.body["param"] == "grader.model" and refused.value.body["code"] == "model_not_found"
