"""ORM tables. JSON columns hold the API's nested objects (hyperparameters, method, metadata)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(Integer)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; the key is never stored
    hint: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "sk-...abcd", to tell keys apart
    created_at: Mapped[int] = mapped_column(Integer)
    revoked_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(Integer, index=True)
    sort_key: Mapped[float] = mapped_column(Float, index=True, default=time.time)  # creation order, below a second
    status: Mapped[str] = mapped_column(String(16), default="processed")


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    model: Mapped[str] = mapped_column(String(256))  # as asked for: a base model or an ft: model
    base_model: Mapped[str] = mapped_column(String(256))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), index=True)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    integrations: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    result_files: Mapped[list[str]] = mapped_column(JSON, default=list)
    trained_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    estimated_finish: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, index=True)
    sort_key: Mapped[float] = mapped_column(Float, index=True, default=time.time)  # creation order, below a second
    finished_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    resume_status: Mapped[str | None] = mapped_column(String(32), nullable=True)  # a paused job's status to return to
    # The legacy API's classification metrics: {n_classes, positive_class, betas}, or None.
    classification: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    device: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "cuda": a job for GPU workers first
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # workers lost while holding it


class Worker(Base):
    """A live worker process, as it last reported itself (heartbeat_at); its row goes when it stops."""
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # HOST:PID, as jobs.worker_id
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(16))  # what it trains on: cpu | cuda
    labels: Mapped[list[str]] = mapped_column(JSON, default=list)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the job it holds now
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)


class JobEvent(Base):
    __tablename__ = "job_events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # total order
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    created_at: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class FineTunedModel(Base):
    __tablename__ = "fine_tuned_models"
    id: Mapped[str] = mapped_column(String(256), primary_key=True)  # ft:BASE:ORG:SUFFIX:ID
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    organization_name: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(String(256))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    training_type: Mapped[str] = mapped_column(String(8))  # lora | full
    created_at: Mapped[int] = mapped_column(Integer)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # ftckpt-...
    model_id: Mapped[str] = mapped_column(String(300), unique=True)  # ft:BASE:ORG:SUFFIX:ID:ckpt-step-N
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(256))
    step_number: Mapped[int] = mapped_column(Integer)
    training_type: Mapped[str] = mapped_column(String(8))  # lora | full: what its weights are
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(Integer)


class Eval(Base):
    """An eval: what its runs' items look like (data_source_config) and how they are graded."""
    __tablename__ = "evals"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # eval_...
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    data_source_config: Mapped[dict[str, Any]] = mapped_column(JSON)  # as requested: item_schema, include_sample_schema
    testing_criteria: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(Integer)
    sort_key: Mapped[float] = mapped_column(Float, index=True, default=time.time)  # creation order, below a second
    updated_at: Mapped[float] = mapped_column(Float, index=True, default=time.time)


class EvalRun(Base):
    """A run of an eval: queued, then claimed by a worker with a lease (as jobs are) and executed
    a batch of items at a time; its counts grow with each batch."""
    __tablename__ = "eval_runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # evalrun_...
    eval_id: Mapped[str] = mapped_column(ForeignKey("evals.id"), index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    data_source: Mapped[dict[str, Any]] = mapped_column(JSON)  # as requested (inline items included)
    metadata_: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result_counts: Mapped[dict[str, int]] = mapped_column(JSON)
    per_criteria: Mapped[dict[str, Any]] = mapped_column(JSON)  # criterion name: {passed, failed}
    per_model_usage: Mapped[dict[str, Any]] = mapped_column(JSON)  # model: {invocation_count, tokens...}
    items_done: Mapped[int] = mapped_column(Integer, default=0)  # the items graded so far, in order
    created_at: Mapped[int] = mapped_column(Integer)
    sort_key: Mapped[float] = mapped_column(Float, index=True, default=time.time)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(nullable=True)
    crashes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # workers lost while holding it


class EvalOutputItem(Base):
    """One item of a run as it was graded: its sample and each criterion's result."""
    __tablename__ = "eval_output_items"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # total order
    id: Mapped[str] = mapped_column(String(64), unique=True)  # outputitem_...
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id"), index=True)
    datasource_item_id: Mapped[int] = mapped_column(Integer)  # the item's index in the run's data
    status: Mapped[str] = mapped_column(String(8))  # pass | fail | error
    datasource_item: Mapped[dict[str, Any]] = mapped_column(JSON)
    sample: Mapped[dict[str, Any]] = mapped_column(JSON)
    results: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(Integer)
