"""What /openapi.json declares beyond what FastAPI derives, so that clients and the fuzz test
(tests/api/test_fuzz.py) read there what the API does: OpenAI's envelope (protocol.common.ErrorResponse)
under each status code an operation answers with (errors()), request validation as the 400 it is
(openapi_document()), the multipart forms the upload endpoints read themselves (multipart()) and
the responses that are bytes (BINARY, ZIP)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from tunery.protocol.common import ErrorResponse

WHEN = {
    400: "The request is invalid; `param` names the field.",
    401: "No API key, or one this server does not know.",
    403: "The organization may not do this to the object.",
    404: "No such object (another organization's objects included).",
    409: "The object is not in a state that allows it.",
    413: "The body is larger than the limit.",
    429: "Too much at once: wait for earlier work to finish.",
    500: "A fault of the server; the message names the request id its log line carries.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses` for these error statuses."""
    return {status: {"model": ErrorResponse, "description": WHEN[status]} for status in statuses}


def openapi_document(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """What app.openapi is: FastAPI's document with request validation as this API answers it, a
    400 in the envelope (api/app.py's _validation_error) where FastAPI would declare its 422 for
    query parameters and bodies (path parameters here are free strings: they cannot fail), and
    the 413 the body limit answers for a JSON body."""
    build = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for path in schema["paths"].values():
                for operation in path.values():
                    responses = operation["responses"]
                    validated = responses.pop("422", None) is not None and (
                        "requestBody" in operation or any(p["in"] != "path" for p in operation.get("parameters", ())))
                    json_body = "application/json" in operation.get("requestBody", {}).get("content", {})
                    for status, applies in ((400, validated), (413, json_body)):
                        if applies:
                            responses.setdefault(str(status), _declared(status))
                    operation["responses"] = dict(sorted(responses.items()))
            for unused in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(unused, None)
        return app.openapi_schema

    return document


def _declared(status: int) -> dict[str, Any]:
    reference = {"$ref": f"#/components/schemas/{ErrorResponse.__name__}"}
    return {"description": WHEN[status], "content": {"application/json": {"schema": reference}}}


def _bytes(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}


BINARY = _bytes("application/octet-stream", "The file's bytes as they were uploaded.")  # a file's content
ZIP = _bytes("application/zip", "The exported model's folder as a zip.")


def multipart(form: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra declaring a multipart/form-data body shaped as `form`, for the endpoints
    that read their form themselves as it streams in (api/uploads.py)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form.model_json_schema()}}}}
