"""graders.validate through the official client: a grader that can run comes back as sent; one
that cannot is a 400 in OpenAI's envelope whose param is the path of the field at fault."""

from __future__ import annotations

import openai
import pytest

from tests.helpers import TINY_MODEL

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}
JUDGE = {"type": "score_model", "name": "judge", "model": TINY_MODEL, "range": [0, 10],
         "input": [{"role": "system", "content": "Rate the answer."},
                   {"role": "user", "content": [{"type": "input_text", "text": "{{sample.output_text}}"}]}],
         "sampling_params": {"temperature": 0.2, "max_completions_tokens": 16, "seed": 1}}
LABELS = {"type": "label_model", "name": "mood", "model": TINY_MODEL, "labels": ["good", "bad"],
          "passing_labels": ["good"], "input": [{"role": "user", "content": "{{sample.output_text}}"}]}
MULTI = {"type": "multi", "name": "both", "calculate_output": "0.5 * exact + 0.05 * judge",
         "graders": {"exact": EXACT, "judge": JUDGE}}


@pytest.mark.parametrize("grader", [EXACT, JUDGE, MULTI,
                                    {"type": "text_similarity", "name": "s", "input": "{{sample.output_json.a[0]}}",
                                     "reference": "{{item.x}}", "evaluation_metric": "rouge_l"}],
                         ids=["string_check", "score_model", "multi", "text_similarity"])
def test_a_grader_that_can_run_comes_back_as_sent(client, grader):
    answer = client.fine_tuning.alpha.graders.validate(grader=grader)
    assert answer.grader.model_dump(exclude_none=True) == grader


def test_a_label_model_grader_is_valid_in_a_multi_grader(client):
    grader = {"type": "multi", "name": "m", "calculate_output": "mood", "graders": {"mood": LABELS}}
    assert client.fine_tuning.alpha.graders.validate(grader=grader).grader.calculate_output == "mood"


@pytest.mark.parametrize("grader, param, says", [
    (EXACT | {"operation": "equals"}, "grader.operation", "'eq', 'ne', 'like' or 'ilike'"),
    (EXACT | {"type": "string_compare"}, "grader", "needs a 'type'"),
    ({k: v for k, v in EXACT.items() if k != "reference"}, "grader.reference", "Field required"),
    (EXACT | {"threshold": 1}, "grader.threshold", "Extra inputs"),
    (EXACT | {"reference": "{{answer}}"}, "grader.reference", "namespace"),
    (EXACT | {"input": "{{sample.text}}"}, "grader.input", "no field of the sample"),
    (JUDGE | {"range": [1, 0]}, "grader.range", "low < high"),
    (JUDGE | {"range": [0, 1, 2]}, "grader.range", "two finite numbers"),
    (JUDGE | {"model": "no-such-model"}, "grader.model", "does not exist"),
    (JUDGE | {"sampling_params": {"temperature": 3}}, "grader.sampling_params.temperature", "less than or equal to 2"),
    (JUDGE | {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
     "grader.input.0.content", "images and audio"),
    (JUDGE | {"input": [{"role": "critic", "content": "x"}]}, "grader.input.0.role", "'user'"),
    (JUDGE | {"input": []}, "grader.input", "at least 1"),
    (MULTI | {"calculate_output": "exact + judges"}, "grader.calculate_output", "'judges'"),
    (MULTI | {"calculate_output": "__import__('os').system('true')"}, "grader.calculate_output", "may hold only"),
    (MULTI | {"calculate_output": "exact +"}, "grader.calculate_output", "not a formula"),
    (MULTI | {"graders": {"exact": EXACT | {"operation": "is"}}}, "grader.graders.exact.operation", "'eq'"),
    (MULTI | {"graders": {"exact": EXACT, "judge": JUDGE | {"model": "gone"}}}, "grader.graders.judge.model",
     "does not exist"),
    (MULTI | {"graders": {"the judge": JUDGE}, "calculate_output": "1"}, "grader.graders.the judge", "cannot be named"),
    (MULTI | {"graders": {"inner": MULTI}}, "grader.graders.inner", "needs a 'type'"),
    ({"type": "text_similarity", "name": "s", "input": "a", "reference": "b", "evaluation_metric": "cosine"},
     "grader.evaluation_metric", "no embedding model"),
    ({"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0"}, "grader.type",
     "TUNERY_PYTHON_GRADERS=on"),
])
def test_a_grader_that_cannot_run_is_a_400_naming_the_field(client, grader, param, says):
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.alpha.graders.validate(grader=grader)
    error = refused.value.body
    assert error["param"] == param and says in error["message"], error
    assert refused.value.response.json()["error"]["type"] == "invalid_request_error"


def test_label_model_labels_checked(client):
    for grader, param in ((LABELS | {"passing_labels": ["great"]}, "grader.passing_labels"),
                          (LABELS | {"labels": ["good", "good"]}, "grader.labels")):
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.alpha.graders.validate(grader={"type": "multi", "name": "m", "calculate_output": "x",
                                                              "graders": {"x": grader}})
        assert refused.value.body["param"] == param.replace("grader", "grader.graders.x")


def test_run_refuses_what_validate_refuses(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.alpha.graders.run(grader=EXACT | {"operation": "equals"}, model_sample="x")
    assert refused.value.body["param"] == "grader.operation"
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.alpha.graders.run(grader=EXACT, model_sample=None)
    assert refused.value.body["param"] == "model_sample"
