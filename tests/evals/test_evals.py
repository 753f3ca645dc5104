"""Evals through the official client, on SQLite and PostgreSQL: create, list (paged, both orders,
by creation and update), retrieve, update and delete; a jsonl run of inline items with their
samples graded by string_check and text_similarity criteria gives exact counts and output items,
which page; another organization sees none of it (404); items that do not match the item_schema
are refused with the item and the field named."""

from __future__ import annotations

import io
import json
import time

import httpx

import openai
import pytest

from openai.types import EvalCreateResponse
from openai.types.evals import RunCreateResponse
from openai.types.evals.runs import OutputItemListResponse

from tests.helpers import jsonl, key_for
from tests.evals.common import ANSWER_SCHEMA, EXACT, wait_for_run

# A capital per country: three samples right, one wrong, one right but in lower case.
ROWS = [({"country": "France", "answer": "Paris"}, "Paris"), ({"country": "Italy", "answer": "Rome"}, "Rome"),
        ({"country": "Spain", "answer": "Madrid"}, "Madrid"), ({"country": "Japan", "answer": "Tokyo"}, "Kyoto"),
        ({"country": "Peru", "answer": "Lima"}, "lima")]
SIMILAR = {"type": "text_similarity", "name": "similar", "input": "{{sample.output_text}}",
           "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.7}


def content(rows=ROWS) -> dict:
    return {"type": "file_content", "content": [{"item": item, "sample": {"output_text": text}} for item, text in rows]}


# What OpenAI sends as null where the SDK's generated types name no None: a run without an error,
# without a report page, of no model (a jsonl run's), a sample that was not generated.
RUN_NULLS = {"error": {"code": "", "message": ""}, "report_url": "", "model": ""}
SAMPLE_NULLS = {"error": {"code": "", "message": ""}, "finish_reason": "", "model": "", "seed": 0,
                "temperature": 0.0, "top_p": 0.0, "max_completion_tokens": 0}


def sdk_shaped(sdk_type, body: dict, nulls: dict | None = None) -> None:
    """The JSON as sent is the SDK's type, strictly (the nulls above set aside)."""
    body = body | {k: v for k, v in (nulls or {}).items() if body.get(k) is None}
    sdk_type.model_validate(body, strict=True)


def upload(client, rows: list[dict]):
    """Rows uploaded as a file for evals."""
    return client.files.create(file=("items.jsonl", io.BytesIO(jsonl(rows))), purpose="evals")


def test_evals_and_a_jsonl_run(start_server, database):
    server = start_server()
    client = server.client()
    config = {"type": "custom", "item_schema": ANSWER_SCHEMA, "include_sample_schema": True}
    evaluation = client.evals.create(name="capitals", data_source_config=config, testing_criteria=[EXACT, SIMILAR],
                                     metadata={"team": "geo"})
    assert evaluation.id.startswith("eval_") and evaluation.object == "eval" and evaluation.name == "capitals"
    assert evaluation.data_source_config.type == "custom"
    assert evaluation.data_source_config.schema_["properties"]["item"] == ANSWER_SCHEMA
    assert set(evaluation.data_source_config.schema_["required"]) == {"item", "sample"}
    assert [c.name for c in evaluation.testing_criteria] == ["exact", "similar"]
    assert evaluation.testing_criteria[1].pass_threshold == 0.7 and evaluation.metadata == {"team": "geo"}

    # list: oldest first by default, paged; newest first; by update time
    others = [client.evals.create(name=f"eval {i}", data_source_config=config, testing_criteria=[EXACT]) for i in range(3)]
    ids = [evaluation.id] + [e.id for e in others]
    page = client.evals.list(limit=2)
    assert [e.id for e in page.data] == ids[:2] and page.has_more
    assert [e.id for e in client.evals.list(limit=2)] == ids  # the SDK pages on with `after`
    assert [e.id for e in client.evals.list(order="desc")] == ids[::-1]
    renamed = client.evals.update(others[0].id, name="renamed", metadata={"v": "2"})
    assert renamed.name == "renamed" and renamed.metadata == {"v": "2"}
    assert client.evals.retrieve(others[0].id).name == "renamed"
    assert client.evals.list(order="desc", order_by="updated_at").data[0].id == others[0].id
    deleted = client.evals.delete(others[1].id)
    assert deleted.deleted and deleted.eval_id == others[1].id
    with pytest.raises(openai.NotFoundError):
        client.evals.retrieve(others[1].id)

    # a jsonl run of inline items with their samples
    run = client.evals.runs.create(evaluation.id, name="given answers", data_source={"type": "jsonl",
                                                                                     "source": content()})
    assert run.id.startswith("evalrun_") and run.status == "queued" and run.eval_id == evaluation.id
    assert run.result_counts.total == 5
    run = wait_for_run(client, evaluation.id, run.id)
    assert run.status == "completed", run.error
    sdk_shaped(EvalCreateResponse, client.evals.with_raw_response.retrieve(evaluation.id).http_response.json())
    sdk_shaped(RunCreateResponse, client.evals.runs.with_raw_response.retrieve(
        run.id, eval_id=evaluation.id).http_response.json(), RUN_NULLS)
    for body in client.evals.runs.output_items.with_raw_response.list(
            run.id, eval_id=evaluation.id).http_response.json()["data"]:
        sdk_shaped(OutputItemListResponse, body | {"sample": body["sample"] | {
            k: v for k, v in SAMPLE_NULLS.items() if body["sample"].get(k) is None}})
    # exact: Paris, Rome, Madrid pass; Kyoto and lima fail. similar (fuzzy >= 0.7): lima passes too (0.75).
    assert run.result_counts.model_dump() == {"total": 5, "passed": 3, "failed": 2, "errored": 0}
    by_name = {r.testing_criteria: (r.passed, r.failed) for r in run.per_testing_criteria_results}
    assert by_name == {"exact": (3, 2), "similar": (4, 1)}
    assert run.per_model_usage == []  # nothing generated, no judge

    items = list(client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, limit=2))  # pages of 2
    assert [i.datasource_item_id for i in items] == [0, 1, 2, 3, 4]
    assert [i.status for i in items] == ["pass", "pass", "pass", "fail", "fail"]
    kyoto = items[3]
    assert kyoto.datasource_item == ROWS[3][0] and kyoto.sample.output[0].content == "Kyoto"
    assert {r.name: (r.score, r.passed) for r in kyoto.results}["exact"] == (0.0, False)
    lima = {r.name: r for r in items[4].results}
    assert lima["similar"].passed and lima["similar"].score == pytest.approx(0.75)
    assert client.evals.runs.output_items.retrieve(kyoto.id, eval_id=evaluation.id, run_id=run.id).id == kyoto.id
    failed = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, status="fail")
    assert [i.datasource_item_id for i in failed] == [3, 4]
    newest = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, order="desc", limit=1)
    assert newest.data[0].datasource_item_id == 4 and newest.has_more

    # the same items from an uploaded file
    file = upload(client, [{"item": item, "sample": {"output_text": text}} for item, text in ROWS])
    from_file = client.evals.runs.create(evaluation.id, data_source={"type": "jsonl",
                                                                     "source": {"type": "file_id", "id": file.id}})
    from_file = wait_for_run(client, evaluation.id, from_file.id)
    assert from_file.result_counts == run.result_counts
    assert [r.id for r in client.evals.runs.list(evaluation.id)] == [run.id, from_file.id]
    assert [r.id for r in client.evals.runs.list(evaluation.id, status="completed", order="desc")] == [from_file.id, run.id]

    # another organization sees none of it
    other = server.client(api_key=key_for(server, "another-org"))
    assert [e.id for e in other.evals.list()] == []
    for call in (lambda: other.evals.retrieve(evaluation.id), lambda: other.evals.delete(evaluation.id),
                 lambda: other.evals.update(evaluation.id, name="mine"),
                 lambda: other.evals.runs.list(evaluation.id),
                 lambda: other.evals.runs.retrieve(run.id, eval_id=evaluation.id),
                 lambda: other.evals.runs.cancel(run.id, eval_id=evaluation.id),
                 lambda: other.evals.runs.output_items.list(run.id, eval_id=evaluation.id),
                 lambda: other.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": content()})):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as refused:  # its own file, not ours
        other.evals.runs.create(other.evals.create(data_source_config=config, testing_criteria=[EXACT]).id,
                                data_source={"type": "jsonl", "source": {"type": "file_id", "id": file.id}})
    assert refused.value.body["param"] == "data_source.source.id"

    # a deleted run, then a deleted eval, with its runs
    assert client.evals.runs.delete(from_file.id, eval_id=evaluation.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.retrieve(from_file.id, eval_id=evaluation.id)
    client.evals.delete(evaluation.id)
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.retrieve(run.id, eval_id=evaluation.id)


def test_items_that_do_not_match_the_schema_are_refused_naming_the_item_and_field(client):
    config = {"type": "custom", "item_schema": ANSWER_SCHEMA}
    evaluation = client.evals.create(data_source_config=config, testing_criteria=[EXACT])
    rows = [({"country": "France", "answer": "Paris"}, "Paris"), ({"country": "Italy"}, "Rome"),
            ({"country": "Spain", "answer": 7}, "Madrid")]
    with pytest.raises(openai.BadRequestError) as refused:
        client.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": content(rows)})
    assert refused.value.body["param"] == "data_source.source.content.1.item"
    assert "Item 1" in refused.value.body["message"] and "'answer' is a required property" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": content([rows[0], rows[2]])})
    assert refused.value.body["param"] == "data_source.source.content.1.item"
    assert "item.answer" in refused.value.body["message"] and "is not of type 'string'" in refused.value.body["message"]
    file = upload(client, [{"item": rows[0][0]}, {"item": rows[1][0]}])
    with pytest.raises(openai.BadRequestError) as refused:
        client.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": file.id}})
    assert refused.value.body["param"] == "data_source.source.id" and "Item 1" in refused.value.body["message"]
    assert client.evals.runs.list(evaluation.id).data == []  # nothing was stored


@pytest.mark.parametrize("body, param", [
    ({"data_source_config": {"type": "custom", "item_schema": {"type": "thing"}}, "testing_criteria": [EXACT]},
     "data_source_config.item_schema"),
    ({"data_source_config": {"type": "custom", "item_schema": ANSWER_SCHEMA}, "testing_criteria": []},
     "testing_criteria"),
    ({"data_source_config": {"type": "custom", "item_schema": ANSWER_SCHEMA},
      "testing_criteria": [EXACT | {"operation": "equals"}]}, "testing_criteria.0.operation"),
    ({"data_source_config": {"type": "custom", "item_schema": ANSWER_SCHEMA},
      "testing_criteria": [EXACT | {"reference": "{{answer}}"}]}, "testing_criteria.0.reference"),
    ({"data_source_config": {"type": "custom", "item_schema": ANSWER_SCHEMA},
      "testing_criteria": [SIMILAR | {"pass_threshold": None}]}, "testing_criteria.0.pass_threshold"),
    ({"data_source_config": {"type": "custom", "item_schema": ANSWER_SCHEMA}, "testing_criteria": [EXACT, EXACT]},
     "testing_criteria.1.name"),
    ({"data_source_config": {"type": "custom", "item_schema": ANSWER_SCHEMA}, "testing_criteria": [
        {"type": "score_model", "name": "judge", "model": "no-such-model", "input": [{"role": "user", "content": "?"}]}]},
     "testing_criteria.0.model"),
    ({"data_source_config": {"type": "logs"}, "testing_criteria": [EXACT]}, "data_source_config.type"),
])
def test_create_refuses_naming_the_field(client, body, param):
    with pytest.raises(openai.BadRequestError) as refused:
        client.evals.create(**body)
    assert refused.value.body["param"] == param, refused.value.body


def test_a_run_refuses_what_it_cannot_run(client):
    evaluation = client.evals.create(data_source_config={"type": "custom", "item_schema": ANSWER_SCHEMA},
                                     testing_criteria=[EXACT])
    source = content()
    for data_source, param in [
        ({"type": "completions", "model": "no-such-model", "source": source}, "data_source.model"),
        ({"type": "completions", "model": "tiny-llama", "source": source, "input_messages": {
            "type": "template", "template": [{"role": "user", "content": "{{sample.output_text}}"}]}},
         "data_source.input_messages.template.0.content"),
        ({"type": "completions", "model": "tiny-llama", "source": source,
          "input_messages": {"type": "item_reference", "item_reference": "messages"}},
         "data_source.input_messages.item_reference"),
        ({"type": "jsonl", "source": {"type": "file_id", "id": "file-nothere"}}, "data_source.source.id"),
        ({"type": "jsonl", "source": {"type": "file_content", "content": []}}, "data_source.source.content"),
        ({"type": "responses", "source": source}, "data_source"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.evals.runs.create(evaluation.id, data_source=data_source)
        assert refused.value.body["param"] == param, refused.value.body
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.create("eval_nothere", data_source={"type": "jsonl", "source": source})
    with pytest.raises(openai.BadRequestError) as refused:
        client.evals.list(after="eval_nothere")
    assert refused.value.body["param"] == "after"


def post_raw(client, path: str, body: dict) -> httpx.Response:
    """body sent as Python's json.dumps writes it (NaN, Infinity: the SDK of this version refuses to)."""
    return httpx.post(f"{str(client.base_url).rstrip('/')}{path}", content=json.dumps(body), timeout=30,
                      headers={"Authorization": f"Bearer {client.api_key}", "Content-Type": "application/json"})


def test_nan_and_infinity_are_refused_naming_the_field_and_nothing_is_stored(client):
    config = {"type": "custom", "item_schema": ANSWER_SCHEMA}
    before = [e.id for e in client.evals.list(limit=100).data]
    for value in (float("nan"), float("inf")):
        for body, param in [
            ({"data_source_config": config, "testing_criteria": [SIMILAR | {"pass_threshold": value}]},
             "testing_criteria.0.pass_threshold"),
            ({"data_source_config": {"type": "custom", "item_schema": ANSWER_SCHEMA | {
                "properties": {"answer": {"type": "number", "maximum": value}}}}, "testing_criteria": [EXACT]},
             "data_source_config.item_schema.properties.answer.maximum")]:
            refused = post_raw(client, "/evals", body)
            assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
    assert [e.id for e in client.evals.list(limit=100).data] == before
    evaluation = client.evals.create(data_source_config={"type": "custom", "item_schema": {"type": "object"}},
                                     testing_criteria=[EXACT])
    for row, param in [({"item": {"answer": float("nan")}}, "data_source.source.content.0.item.answer"),
                       ({"item": {}, "sample": {"score": float("-inf")}}, "data_source.source.content.0.sample.score")]:
        refused = post_raw(client, f"/evals/{evaluation.id}/runs", {"data_source": {"type": "jsonl", "source": {
            "type": "file_content", "content": [row]}}})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
    assert client.evals.runs.list(evaluation.id).data == []
    assert [e.id for e in client.evals.list(limit=100).data] == before + [evaluation.id]
    assert client.evals.retrieve(evaluation.id).id == evaluation.id


@pytest.mark.parametrize("item_schema", [
    {"$ref": "#/definitions/missing"},
    {"type": "object", "properties": {"answer": {"$ref": "https://example.com/answer.json"}}},
    {"type": "object", "properties": {"answer": {"$ref": "answer.json"}}},
])
def test_an_item_schema_whose_ref_leaves_it_or_names_nothing_is_refused(client, item_schema):
    with pytest.raises(openai.BadRequestError) as refused:
        client.evals.create(data_source_config={"type": "custom", "item_schema": item_schema}, testing_criteria=[EXACT])
    assert refused.value.body["param"] == "data_source_config.item_schema", refused.value.body
    assert "$ref" in refused.value.body["message"]


def test_an_item_schema_with_local_refs_checks_items_through_them(client):
    schema = {"$defs": {"answer": {"type": "string"}}, "type": "object",
              "properties": {"answer": {"$ref": "#/$defs/answer"}}}
    evaluation = client.evals.create(data_source_config={"type": "custom", "item_schema": schema},
                                     testing_criteria=[EXACT])
    with pytest.raises(openai.BadRequestError) as refused:
        client.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": content([({"answer": 7}, "7")])})
    assert refused.value.body["param"] == "data_source.source.content.0.item"
    run = client.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": content(ROWS[:1])})
    assert wait_for_run(client, evaluation.id, run.id).status == "completed"


def test_a_pattern_that_backtracks_without_end_is_an_item_error_in_bounded_time(client):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "pattern": "^(a|a)*$"}}}
    evaluation = client.evals.create(data_source_config={"type": "custom", "item_schema": schema},
                                     testing_criteria=[EXACT])
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as refused:
        client.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": content(
            [({"answer": "a" * 60 + "b"}, "x")])})
    assert time.monotonic() - started < 10
    assert refused.value.body["param"] == "data_source.source.content.0.item"
    assert "took more than" in refused.value.body["message"]
    run = client.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": content(
        [({"answer": "aaa"}, "aaa")])})
    assert wait_for_run(client, evaluation.id, run.id).result_counts.passed == 1
