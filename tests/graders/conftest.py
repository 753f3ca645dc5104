"""Fixtures of the graders' tests: a server with python graders on under tight limits (and a
secret in its environment that no grader may see) and grade(): one graders.run through the
official client. The server with the embedded SmolLM2 to judge (smol_server) is tests/conftest.py's."""

from __future__ import annotations

from collections.abc import Callable

import pytest



@pytest.fixture(scope="module")
def python_server(start_module_server):
    """python graders on: 3 s, 512 MB each; a key in its environment (OPENAI_API_KEY) that no grader may see."""
    return start_module_server(env={"TUNERY_PYTHON_GRADERS": "on", "TUNERY_PYTHON_GRADER_MEMORY_MB": "512",
                                    "TUNERY_PYTHON_GRADER_TIMEOUT_SECONDS": "3",
                                    "OPENAI_API_KEY": "sk-secret-of-the-server"})


@pytest.fixture
def grade(client) -> Callable:
    """grade(grader, model_sample, item=None, client=the tiny server's) -> the SDK's GraderRunResponse."""
    def run(grader: dict, model_sample: str, item=None, on=None):
        extra = {} if item is None else {"item": item}
        return (on or client).fine_tuning.alpha.graders.run(grader=grader, model_sample=model_sample, **extra)

    return run
