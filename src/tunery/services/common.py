"""Checks that several services make of a request before anything is stored: metadata within
OpenAI's bounds, and no NaN or Infinity anywhere in a body (Python's JSON reads them; nothing
stored may hold them, since no response could show them)."""

from __future__ import annotations

import math
from typing import Any

from tunery.errors import InvalidRequest

MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512  # as OpenAI


def check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(f"metadata holds at most {MAX_METADATA_PAIRS} pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise InvalidRequest(f"metadata keys are at most {MAX_METADATA_KEY} characters and values at most "
                                 f"{MAX_METADATA_VALUE}; {key[:70]!r} is not.", param="metadata")


def check_finite(value: Any, param: str) -> None:
    """400 naming the field when a number anywhere under value (dicts, lists) is NaN or Infinity."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"{param} is {value}: JSON numbers are finite (no NaN or Infinity).", param=param)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{param}.{key}" if param else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_finite(item, f"{param}.{index}")
