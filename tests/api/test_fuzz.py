"""Schemathesis against a running `tunery serve`: requests generated from the server's OpenAPI
document (valid and invalid ones, a bounded number per operation), sent with a real key; every
answer must be no server error, carry a status code the document declares for the operation,
and match the schema it declares for that code. Once with every parameter generated (unknown
ids: the 400s and 404s), once with the path's ids replaced by real objects (a file, a trained
job, its fine-tuned model), whose answers are the 200s and 409s. The server's worker trains only
the job the fixture creates: a generated job names no file that exists, so none is created.

The document is built from the app in this process at import (schemathesis parametrizes tests as
they are collected, before any server runs); test_the_running_server_serves_the_fuzzed_document
checks that the server serves the same one."""

from __future__ import annotations

import tempfile

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from tests.helpers import MARV, TEST_KEY, TINY_MODEL, server_factory, upload, wait_until_finished
from tunery.api.app import create_app
from tunery.config import Settings

MAX_EXAMPLES = 25  # per operation and test, besides the coverage phase's cases: the file takes about a minute on 2 cores
AUTHORIZED = {"Authorization": f"Bearer {TEST_KEY}"}
CHECKS = ["not_a_server_error", "status_code_conformance", "response_schema_conformance"]
# Not fuzzed:
# - chat and legacy completions: a model that exists starts generation on the engine every
#   organization shares (a 128-completion request can hold it for minutes), and a generated name
#   only reaches the 404 for an unknown model, which routes/chat.py and completions.py do not
#   declare yet; tests/api/test_chat.py, test_completions.py and test_serving_limits.py drive them.
EXCLUDED_PATHS = r"^/v1/(chat/)?completions$"
# - an export of a real model converts it (merged weights, GGUF: seconds to minutes of CPU per
#   format); with generated ids it is fuzzed like the rest.
CONVERTING_PATHS = r"/export$"
# - the coverage phase (every boundary of every schema, deterministically) of the graders, of an
#   eval's creation and of its runs', whose bodies are unions (of the grader types, of the data
#   sources): 5,600 of test_generated_requests' 7,100 requests (a minute); their generated examples stay,
#   and tests/graders and tests/evals drive those types' boundaries one by one.
UNION_BODIES = r"^/v1/(evals(/\{eval_id\}/runs)?|fine_tuning/alpha/graders/(run|validate))$"
CONFIG = SchemathesisConfig.from_dict({"operations": [
    {"include-path-regex": UNION_BODIES, "phases": {"coverage": {"enabled": False}}}]})


def _document() -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        return create_app(Settings(data_dir=data_dir, database_url=None)).openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG).exclude(path_regex=EXCLUDED_PATHS)
schema.config.generation.update(max_examples=MAX_EXAMPLES)
schema.config.checks.update(included_check_names=CHECKS)
on_real_objects = schema.include(path_regex=r"\{").exclude(path_regex=CONVERTING_PATHS)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    start, servers = server_factory(tmp_path_factory.mktemp("fuzz"))
    yield start(base_models=(tiny_model_dir,))
    for running in servers:
        running.stop()


@pytest.fixture(scope="module")
def origin(server) -> str:
    return server.base_url.removesuffix("/v1")


@pytest.fixture(scope="module")
def trained(server) -> dict[str, str]:
    """A job trained to the end (events, a checkpoint) and its fine-tuned model."""
    client = server.client()
    job = client.fine_tuning.jobs.create(model=TINY_MODEL, training_file=upload(client, MARV).id,
                                         hyperparameters={"n_epochs": 1, "batch_size": 12})
    job = wait_until_finished(client, job.id)
    assert job.status == "succeeded", job.error
    return {"job_id": job.id, "model_id": job.fine_tuned_model}


@pytest.fixture
def real_ids(server, trained) -> dict[str, str]:
    """The path ids of real objects, with a file of each operation's own (deleting it is fuzzed too)."""
    return trained | {"file_id": upload(server.client(), MARV).id}


def test_the_running_server_serves_the_fuzzed_document(origin):
    assert httpx.get(f"{origin}/openapi.json").json() == DOCUMENT


@schema.parametrize()
def test_generated_requests(case, origin):
    case.call_and_validate(base_url=origin, headers=AUTHORIZED)


@on_real_objects.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # one file per operation, not per example
def test_generated_requests_on_real_objects(case, origin, real_ids):
    case.path_parameters = {name: real_ids.get(name, value) for name, value in case.path_parameters.items()}
    case.call_and_validate(base_url=origin, headers=AUTHORIZED)
