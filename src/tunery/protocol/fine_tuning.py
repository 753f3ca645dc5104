"""Fine-tuning jobs and their events (openai.types.fine_tuning.*), requests and responses."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

# "paused" is what OpenAI's service reports for a paused job; the SDK's Literal lacks it.
JobStatus = Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]
Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    """As requested ("auto" or a number) on create; resolved numbers on the job once known.

    Extensions: `training_type` ("lora" | "full"), and the legacy API's `prompt_loss_weight`
    (0-1, default 0.01: how much prompt tokens of prompt/completion data count in the loss).
    """

    model_config = ConfigDict(extra="forbid")

    # Strict numbers, as OpenAI's API: true is no epoch count and "3" is no number.
    n_epochs: Union[Auto, StrictInt, None] = Field(default=None, description="1-50 or auto")
    batch_size: Union[Auto, StrictInt, None] = Field(default=None, description="1-256 or auto")
    learning_rate_multiplier: Union[Auto, StrictFloat, StrictInt, None] = Field(default=None, description="> 0 or auto")
    training_type: Literal["lora", "full"] | None = None
    prompt_loss_weight: Union[StrictFloat, StrictInt, None] = None


class SupervisedMethod(BaseModel):
    hyperparameters: Hyperparameters | None = None


class DpoHyperparameters(BaseModel):
    """openai.types.fine_tuning.DpoHyperparameters, and tunery's `training_type` ("lora" | "full")."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Union[Auto, StrictInt, None] = Field(default=None, description="1-50 or auto")
    batch_size: Union[Auto, StrictInt, None] = Field(default=None, description="1-256 or auto")
    learning_rate_multiplier: Union[Auto, StrictFloat, StrictInt, None] = Field(default=None, description="> 0 or auto")
    beta: Union[Auto, StrictFloat, StrictInt, None] = Field(default=None, description="(0, 2] or auto")
    training_type: Literal["lora", "full"] | None = None


class DpoMethod(BaseModel):
    hyperparameters: DpoHyperparameters | None = None


class Method(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict[str, Any] | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class CreateJobRequest(BaseModel):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    # The legacy API's classification metrics (prompt/completion data with a validation file).
    compute_classification_metrics: bool | None = None
    classification_n_classes: int | None = None
    classification_positive_class: str | None = None
    classification_betas: list[float] | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int
    status: JobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: Method | None = None
    user_provided_suffix: str | None = None  # in OpenAI's responses, though not in the SDK's type


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int
