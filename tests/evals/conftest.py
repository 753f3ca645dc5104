"""Fixtures of the evals' tests: a server with the embedded SmolLM2 to answer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def smol_server(start_module_server, smollm2_dir):
    """A server whose base model is the embedded SmolLM2-135M-Instruct."""
    return start_module_server(base_models=(smollm2_dir,))
