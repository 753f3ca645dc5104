"""/openapi.json says what the API does: each error an operation answers is declared under its
status code with OpenAI's envelope (never FastAPI's 422, which the API does not send), the
multipart uploads declare their forms and a file's content its bytes. What the fuzz test
(test_fuzz.py) found, each kept here as a plain request."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import MARV, TEST_KEY, TINY_MODEL, upload
from tunery.api.app import MAX_BODY_BYTES
from tunery.protocol.common import ErrorResponse
from tunery.services.files import UPLOADABLE_PURPOSES

AUTHORIZED = {"Authorization": f"Bearer {TEST_KEY}"}
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.fixture(scope="module")
def origin(tiny_server) -> str:
    return tiny_server.base_url.removesuffix("/v1")


@pytest.fixture(scope="module")
def document(origin) -> dict:
    return httpx.get(f"{origin}/openapi.json").json()


def waiting_job(client) -> str:
    """A job just created: validating its file, not paused."""
    return client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client).id).id


# (method, the operation's path in the document, the request's path, what else it sends, the status it gets)
ERRORS = [
    ("get", "/v1/files", "/v1/files", {"headers": {}}, 401),
    ("get", "/v1/files", "/v1/files?after=file-unknown", {}, 400),
    ("get", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs?limit=0", {}, 400),
    ("post", "/v1/files", "/v1/files", {"content": b"not a form"}, 400),
    ("get", "/v1/files/{file_id}", "/v1/files/file-unknown", {}, 404),
    ("get", "/v1/files/{file_id}/content", "/v1/files/file-unknown/content", {}, 404),
    ("delete", "/v1/files/{file_id}", "/v1/files/file-unknown", {}, 404),
    ("post", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs", {"json": {"model": "nope", "training_file": "file-x"}}, 404),
    ("post", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs",
     {"content": b" " * (MAX_BODY_BYTES + 1), "headers": AUTHORIZED | {"Content-Type": "application/json"}}, 413),
    ("get", "/v1/fine_tuning/jobs/{job_id}", "/v1/fine_tuning/jobs/ftjob-unknown", {}, 404),
    ("post", "/v1/fine_tuning/jobs/{job_id}/cancel", "/v1/fine_tuning/jobs/ftjob-unknown/cancel", {}, 404),
    ("post", "/v1/fine_tuning/jobs/{job_id}/resume", "/v1/fine_tuning/jobs/{waiting}/resume", {}, 409),
    ("get", "/v1/fine_tuning/jobs/{job_id}/events", "/v1/fine_tuning/jobs/ftjob-unknown/events", {}, 404),
    ("get", "/v1/models/{model_id}", "/v1/models/ft:unknown", {}, 404),
    ("delete", "/v1/models/{model_id}", f"/v1/models/{TINY_MODEL}", {}, 403),
    ("post", "/tunery/files/check", "/tunery/files/check", {"content": b"not a form"}, 400),
    ("get", "/tunery/models/{model_id}/export", f"/tunery/models/{TINY_MODEL}/export?format=nope", {}, 400),
]


@pytest.mark.parametrize("method, operation, path, sent, status", ERRORS,
                         ids=[f"{e[0]} {e[2]} {e[4]}" for e in ERRORS])
def test_each_error_answered_is_declared_with_the_envelope(origin, document, client, method, operation, path,
                                                           sent, status):
    path = path.replace("{waiting}", waiting_job(client)) if "{waiting}" in path else path
    response = httpx.request(method, origin + path, timeout=60, **({"headers": AUTHORIZED} | sent))  # an export loads torch
    assert response.status_code == status, response.text
    ErrorResponse.model_validate(response.json(), strict=True)
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    declared = document["paths"][operation][method]["responses"]
    assert declared[str(status)]["content"]["application/json"]["schema"] == ERROR_SCHEMA


def test_request_validation_is_declared_as_the_400_it_is_never_as_422(document):
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert not any("422" in op["responses"] for op in operations)
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    for path, method in (("/v1/files", "get"), ("/v1/fine_tuning/jobs", "post"), ("/v1/chat/completions", "post")):
        assert document["paths"][path][method]["responses"]["400"]["content"]["application/json"]["schema"] == ERROR_SCHEMA
    # An operation whose only parameter is a path's free string refuses nothing as invalid.
    assert "400" not in document["paths"]["/v1/files/{file_id}"]["get"]["responses"]


def test_uploads_declare_their_multipart_form(origin, document):
    form = document["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["required"]) == {"file", "purpose"} and form["properties"]["file"]["format"] == "binary"
    assert set(form["properties"]["purpose"]["enum"]) == UPLOADABLE_PURPOSES
    response = httpx.post(f"{origin}/v1/files", headers=AUTHORIZED, data={"purpose": "assistants"},
                          files={"file": ("notes.txt", b"anything")})  # a form as declared is taken
    assert response.status_code == 200, response.text
    check = document["paths"]["/tunery/files/check"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert check["required"] == ["model"] and {"file", "file_id", "method"} <= set(check["properties"])


def test_a_files_content_is_declared_as_the_bytes_it_is(origin, document, client):
    file = upload(client, MARV)
    response = httpx.get(f"{origin}/v1/files/{file.id}/content", headers=AUTHORIZED)
    assert response.content == MARV and response.headers["content-type"] == "application/octet-stream"
    assert list(document["paths"]["/v1/files/{file_id}/content"]["get"]["responses"]["200"]["content"]) == \
        ["application/octet-stream"]
    assert list(document["paths"]["/tunery/models/{model_id}/export"]["get"]["responses"]["200"]["content"]) == \
        ["application/zip"]
