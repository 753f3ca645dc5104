"""Object identifiers with OpenAI's prefixes (file-, ftjob-, ftevent-, chatcmpl-, ...)."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}-{''.join(secrets.choice(_ALPHABET) for _ in range(length))}"


def now() -> int:
    """Unix seconds, the API's timestamp unit."""
    return int(time.time())
