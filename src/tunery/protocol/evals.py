"""Evals (openai.types.eval_*, openai.types.evals.*): an eval (a data source config and testing
criteria), its runs (a data source: items with their samples, or a model asked about each item)
and each run's output items, requests and responses.

Testing criteria are the graders of protocol.graders with what evals add: `pass_threshold`
(text_similarity needs one; python and score_model may have one) and no `multi` (the SDK's
union has none). Unknown fields are refused, as graders' are."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tunery.protocol.graders import (JudgeMessage, LabelModelGrader, PythonGrader, ScoreModelGrader,
                                     StringCheckGrader, TextSimilarityGrader, tagged)

RunStatus = Literal["queued", "in_progress", "completed", "canceled", "failed"]
ItemStatus = Literal["pass", "fail", "error"]
Metadata = dict[str, str]
MAX_CRITERIA = 32  # testing criteria of one eval


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# testing criteria ------------------------------------------------------------------------------
class TextSimilarityCriterion(TextSimilarityGrader):
    pass_threshold: float = Field(allow_inf_nan=False, description="An item passes when its score is at least this.")


class PythonCriterion(PythonGrader):
    pass_threshold: float | None = Field(default=None, allow_inf_nan=False,
                                         description="At least this passes; 0.5 when not given.")


class ScoreModelCriterion(ScoreModelGrader):
    pass_threshold: float | None = Field(default=None, allow_inf_nan=False, description=(
        "At least this passes; the middle of the range when not given."))


class LabelModelCriterion(LabelModelGrader):
    """Passes when the judge's label is one of passing_labels."""


class StringCheckCriterion(StringCheckGrader):
    """Passes when the check holds."""


TestingCriterion = tagged(LabelModelCriterion, StringCheckCriterion, TextSimilarityCriterion, PythonCriterion,
                          ScoreModelCriterion, what="A testing criterion")


# evals ------------------------------------------------------------------------------------------
class CustomDataSourceConfigRequest(_Strict):
    type: Literal["custom"]
    item_schema: dict[str, Any] = Field(description="The JSON schema every item of a run's data must match.")
    include_sample_schema: bool = Field(default=False, description=(
        "Runs generate samples (a model answers each item): testing criteria may read {{sample.*}}."))


class CreateEvalRequest(_Strict):
    data_source_config: CustomDataSourceConfigRequest
    testing_criteria: list[TestingCriterion] = Field(min_length=1, max_length=MAX_CRITERIA)
    name: str | None = Field(default=None, max_length=256)
    metadata: Metadata | None = None


class UpdateEvalRequest(_Strict):
    name: str | None = Field(default=None, max_length=256)
    metadata: Metadata | None = None


class CustomDataSourceConfig(BaseModel):
    """The schema of what criteria read: {"item": item_schema} (and the sample's, when runs generate one)."""
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    type: Literal["custom"] = "custom"
    schema_: dict[str, Any] = Field(alias="schema")


class Eval(BaseModel):
    id: str
    object: Literal["eval"] = "eval"
    created_at: int
    name: str
    metadata: Metadata | None = None
    data_source_config: CustomDataSourceConfig
    testing_criteria: list[TestingCriterion]


class EvalDeleted(BaseModel):
    object: Literal["eval.deleted"] = "eval.deleted"
    deleted: bool
    eval_id: str


# runs -------------------------------------------------------------------------------------------
class ContentRow(_Strict):
    item: dict[str, Any]
    sample: dict[str, Any] | None = None


class FileContentSource(_Strict):
    type: Literal["file_content"]
    content: list[ContentRow]


class FileIdSource(_Strict):
    type: Literal["file_id"]
    id: str


Source = tagged(FileContentSource, FileIdSource, what="A run's source")


class TemplateMessages(_Strict):
    """Messages to the model, their {{item.*}} templates filled in for each item."""
    type: Literal["template"]
    template: list[JudgeMessage] = Field(min_length=1)


class ItemReference(_Strict):
    """The messages are the item's own: item_reference names them ("item.messages")."""
    type: Literal["item_reference"]
    item_reference: str = Field(min_length=1)


InputMessages = tagged(TemplateMessages, ItemReference, what="input_messages")


class ResponseFormatText(_Strict):
    type: Literal["text"]


class SamplingParams(_Strict):
    """How the model samples each item's answer. `reasoning_effort` is accepted and has no effect."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    reasoning_effort: str | None = None
    response_format: ResponseFormatText | None = None
    tools: list[dict[str, Any]] | None = None


class JsonlDataSource(_Strict):
    """Items that hold their samples already (under `sample`)."""
    type: Literal["jsonl"]
    source: Source


class CompletionsDataSource(_Strict):
    """A model answers each item: input_messages over the item, sampled with sampling_params."""
    type: Literal["completions"]
    source: Source
    model: str = Field(min_length=1)
    input_messages: InputMessages | None = None
    sampling_params: SamplingParams | None = None


DataSource = tagged(JsonlDataSource, CompletionsDataSource, what="A run's data_source")


class CreateRunRequest(_Strict):
    data_source: DataSource
    name: str | None = Field(default=None, max_length=256)
    metadata: Metadata | None = None


class ResultCounts(BaseModel):
    total: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0


class PerTestingCriteriaResult(BaseModel):
    testing_criteria: str
    passed: int
    failed: int


class PerModelUsage(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    invocation_count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0


class EvalError(BaseModel):
    code: str
    message: str


class EvalRun(BaseModel):
    id: str
    object: Literal["eval.run"] = "eval.run"
    created_at: int
    eval_id: str
    name: str
    model: str | None = None
    status: RunStatus
    data_source: dict[str, Any]
    error: EvalError | None = None
    metadata: Metadata | None = None
    result_counts: ResultCounts
    per_testing_criteria_results: list[PerTestingCriteriaResult]
    per_model_usage: list[PerModelUsage]
    report_url: str | None = None


class EvalRunDeleted(BaseModel):
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: bool
    run_id: str


# output items -----------------------------------------------------------------------------------
class SampleMessage(BaseModel):
    role: str
    content: str | None = None


class SampleUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


class OutputSample(BaseModel):
    """What the model answered (for a jsonl run: the item's sample as given)."""
    input: list[SampleMessage] = []
    output: list[SampleMessage] = []
    finish_reason: str | None = None
    model: str | None = None
    usage: SampleUsage = SampleUsage()
    error: EvalError | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_completion_tokens: int | None = None


class CriterionResult(BaseModel):
    name: str
    type: str | None = None
    score: float
    passed: bool
    sample: dict[str, Any] | None = Field(default=None, description="A model grader's judge's answer.")
    error: str | None = Field(default=None, description="What went wrong while grading (the score is then 0).")


class OutputItem(BaseModel):
    id: str
    object: Literal["eval.run.output_item"] = "eval.run.output_item"
    created_at: int
    run_id: str
    eval_id: str
    datasource_item_id: int
    datasource_item: dict[str, Any]
    results: list[CriterionResult]
    sample: OutputSample
    status: ItemStatus
