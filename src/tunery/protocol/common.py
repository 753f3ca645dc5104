"""Shapes shared by every resource: lists, and the error envelope (TuneryError.envelope() writes it)."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class ListResponse(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool = False


class ErrorObject(BaseModel):
    """What went wrong (openai.types.ErrorObject): `param` names the request's field, `code` the
    kind of refusal, where there is one; both keys are always sent."""
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every failure: {"error": {...}}."""
    error: ErrorObject
