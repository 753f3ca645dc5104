"""Fault injection for the reliability tests: a process killed (SIGKILL, as the out-of-memory
killer does it) at a named point of a job's life. Off unless TUNERY_FAILPOINTS names a JSON file
of {"point": kills_left}, read at each point so that a running server's next job can be given
another; "point=value" names one occurrence (the step "step=18"). Each kill counts down first, so
a point with 1 kills one process and the worker that takes the job over goes through."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

ENVIRONMENT = "TUNERY_FAILPOINTS"


def reach(point: str, value: object | None = None) -> None:
    """Die here when the failpoints file says so (a no-op, one environment lookup, otherwise)."""
    spec = os.environ.get(ENVIRONMENT)
    if not spec:
        return
    path = Path(spec)
    try:
        left = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    for name in (point, f"{point}={value}"):
        if left.get(name, 0) > 0:
            left[name] -= 1
            staged = path.with_suffix(f".{os.getpid()}")
            staged.write_text(json.dumps(left))
            os.replace(staged, path)  # counted down before dying, whatever else reads it
            os.kill(os.getpid(), signal.SIGKILL)
