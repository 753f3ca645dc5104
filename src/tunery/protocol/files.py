"""The `file` object (openai.types.FileObject)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

FilePurpose = Literal["fine-tune", "fine-tune-results", "assistants", "batch", "vision", "user_data", "evals"]
UploadPurpose = Literal["fine-tune", "assistants", "batch", "vision", "user_data", "evals"]  # results are the server's


# The multipart forms below are declared for the OpenAPI document only: api/uploads.py reads each
# as it streams in.
class FileUpload(BaseModel):
    """The form of POST /v1/files: the file, and what it is for."""
    file: bytes
    purpose: UploadPurpose


class FileCheckForm(BaseModel):
    """The form of POST /tunery/files/check: the model (and method) to check a file for, and the
    file itself or the id of an uploaded one."""
    model: str
    method: str | None = None
    file: bytes | None = None
    file_id: str | None = None


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class FileProblem(BaseModel):
    line: int  # 1-based; 0 for the file as a whole
    code: str
    message: str


class FileReport(BaseModel):
    """tunery's extension: a training file checked against a model as a job would check it
    (POST /tunery/files/check), the report `tunery validate --json` prints."""
    object: Literal["tunery.file_report"] = "tunery.file_report"
    model: str  # the base model whose tokenizer and context were used
    ok: bool  # no errors: a job can start from it
    format: str | None  # chat | prompt_completion | preference
    examples: int  # examples without errors
    error_count: int
    warning_count: int
    errors: list[FileProblem]  # the first 1,000
    warnings: list[FileProblem]
    stats: dict[str, Any]  # token statistics (per example: min, max, mean, median, p5, p95), n_epochs,
    # billed_tokens, estimated_seconds (training time measured on this server)
