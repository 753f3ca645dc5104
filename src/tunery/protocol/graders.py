"""Graders (openai.types.graders.*) and the fine-tuning alpha graders endpoints' bodies
(openai.types.fine_tuning.alpha.*): run a grader on one model sample and item, or validate one.

A grader is told apart by its `type`. Its members are tagged with their class names, so that a
refusal's `param` is the field's path in the request ("grader.graders.exact.operation"): the
API's validation handler leaves out the parts of a location that name a model class. Unknown
fields are refused: a misspelt field would otherwise be ignored without a word."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

MAX_SOURCE_CHARS = 256_000  # a python grader's source, as OpenAI bounds it
MAX_TEXT_CHARS = 1_000_000  # a template (input, reference, a message's content)
MAX_SUB_GRADERS = 32  # a multi grader's graders


def tagged(*members: type[BaseModel], what: str) -> Any:
    """A union of models told apart by their `type` field, each tagged with its class name."""
    by_type = {m.model_fields["type"].annotation.__args__[0]: m.__name__ for m in members}

    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return by_type.get(kind) if isinstance(kind, str) else None

    return Annotated[Union[tuple(Annotated[m, Tag(m.__name__)] for m in members)], Discriminator(
        tag, custom_error_type="invalid_type",
        custom_error_message=f"{what} needs a 'type' of {', '.join(repr(t) for t in by_type)}")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class InputText(_Strict):
    type: Literal["input_text"]
    text: Text


class OutputText(_Strict):
    type: Literal["output_text"]
    text: Text


class InputImage(_Strict):
    """Accepted in the shape OpenAI's SDK sends; refused when graded (the judges read text)."""
    type: Literal["input_image"]
    image_url: str
    detail: str | None = None


class InputAudioData(_Strict):
    data: str
    format: Literal["mp3", "wav"]


class InputAudio(_Strict):
    """Accepted in the shape OpenAI's SDK sends; refused when graded (the judges read text)."""
    type: Literal["input_audio"]
    input_audio: InputAudioData


ContentPart = tagged(InputText, OutputText, InputImage, InputAudio, what="A content part")


def _content_tag(value: Any) -> str:
    return "Text" if isinstance(value, str) else "Parts" if isinstance(value, list) else "Part"


class JudgeMessage(_Strict):
    """A message to the judge model; its content (text, a part or a list of parts) may hold templates."""
    role: Literal["user", "assistant", "system", "developer"]
    content: Annotated[Union[Annotated[Text, Tag("Text")], Annotated[ContentPart, Tag("Part")],
                             Annotated[list[ContentPart], Tag("Parts")]], Discriminator(_content_tag)]
    type: Literal["message"] | None = None


class ScoreSamplingParams(_Strict):
    """openai.types.graders.score_model_grader.SamplingParams. `reasoning_effort` is accepted and
    has no effect: the models tunery serves do not reason apart from their answer."""
    max_completions_tokens: int | None = Field(default=None, ge=1)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


Name = Annotated[str, Field(min_length=1, max_length=256)]


class StringCheckGrader(_Strict):
    type: Literal["string_check"]
    name: Name
    input: Text
    reference: Text
    operation: Literal["eq", "ne", "like", "ilike"]


SimilarityMetric = Literal["cosine", "fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3",
                           "rouge_4", "rouge_5", "rouge_l"]


class TextSimilarityGrader(_Strict):
    type: Literal["text_similarity"]
    name: Name
    input: Text
    reference: Text
    evaluation_metric: SimilarityMetric


class PythonGrader(_Strict):
    """`source` defines `grade(sample, item) -> float`. `image_tag` is accepted and has no effect:
    graders run on the server's own Python."""
    type: Literal["python"]
    name: Name
    source: str = Field(max_length=MAX_SOURCE_CHARS)
    image_tag: str | None = None


class _ModelGrader(_Strict):
    """What score_model and label_model graders share: a judge model and its messages."""
    name: Name
    model: str = Field(min_length=1)
    input: list[JudgeMessage] = Field(min_length=1)


class ScoreModelGrader(_ModelGrader):
    type: Literal["score_model"]
    range: list[float] | None = Field(default=None, description="[low, high]; [0, 1] when not given")
    sampling_params: ScoreSamplingParams | None = None


class LabelModelGrader(_ModelGrader):
    type: Literal["label_model"]
    labels: list[Name] = Field(min_length=1)
    passing_labels: list[Name] = Field(min_length=1)


SubGrader = tagged(StringCheckGrader, TextSimilarityGrader, PythonGrader, ScoreModelGrader, LabelModelGrader,
                   what="A grader")


def _graders_tag(value: Any) -> str:
    """One grader (as the SDK's type has it: named by its `name`) or a map of them by name (as
    OpenAI's guide writes it: the names the formula uses)."""
    if isinstance(value, BaseModel) or (isinstance(value, dict) and isinstance(value.get("type"), str)):
        return "Grader"
    return "Graders"


class MultiGrader(_Strict):
    type: Literal["multi"]
    name: Name
    graders: Annotated[Union[Annotated[SubGrader, Tag("Grader")],
                             Annotated[dict[str, SubGrader], Tag("Graders")]], Discriminator(_graders_tag)]
    calculate_output: str = Field(min_length=1, max_length=4096)

    def named_graders(self) -> dict[str, Any]:
        """The sub-graders by the name the formula calls them."""
        return dict(self.graders) if isinstance(self.graders, dict) else {self.graders.name: self.graders}


Grader = tagged(StringCheckGrader, TextSimilarityGrader, PythonGrader, ScoreModelGrader, LabelModelGrader,
                MultiGrader, what="A grader")
AnyGrader = Union[StringCheckGrader, TextSimilarityGrader, PythonGrader, ScoreModelGrader, LabelModelGrader,
                  MultiGrader]


class GraderRunRequest(BaseModel):
    grader: Grader
    model_sample: str = Field(max_length=MAX_TEXT_CHARS, description=(
        "The sample graded: {{sample.output_text}}, and {{sample.output_json}} when it is JSON."))
    item: Any = Field(default=None, description="The dataset item: {{item.*}}.")


class GraderValidateRequest(BaseModel):
    grader: Grader


class GraderValidateResponse(BaseModel):
    grader: Grader | None = None


class MetadataErrors(BaseModel):
    """What went wrong while grading (all false when nothing did); the reward is then 0."""
    model_config = ConfigDict(protected_namespaces=())

    formula_parse_error: bool = False
    invalid_variable_error: bool = False
    model_grader_parse_error: bool = False
    model_grader_refusal_error: bool = False
    model_grader_server_error: bool = False
    model_grader_server_error_details: str | None = None
    other_error: bool = False
    python_grader_runtime_error: bool = False
    python_grader_runtime_error_details: str | None = None
    python_grader_server_error: bool = False
    python_grader_server_error_type: str | None = None
    sample_parse_error: bool = False
    truncated_observation_error: bool = False
    unresponsive_reward_error: bool = False


class GraderRunMetadata(BaseModel):
    errors: MetadataErrors
    execution_time: float
    name: str
    sampled_model_name: str | None = None
    scores: dict[str, Any]
    token_usage: int | None = None
    type: str


class GraderRunResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    metadata: GraderRunMetadata
    model_grader_token_usage_per_model: dict[str, Any]
    reward: float
    sub_rewards: dict[str, Any]
