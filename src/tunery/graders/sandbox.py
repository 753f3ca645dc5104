"""Python graders run as code: each call of a grader's `grade(sample, item)` in a process of its
own (`python -I`: no user site, no PYTHON* variables, the script's folder not on the path), started
with an empty environment (no key of the server's is inherited) in an empty temporary folder that
is removed afterwards, in a session of its own (what it starts is killed with it). Before the
grader's code runs, the process limits itself: its address space (RLIMIT_AS: an allocation past it
is a MemoryError), CPU seconds (RLIMIT_CPU, a backstop to the wall-time limit the server enforces
by killing it), the size of files it writes (RLIMIT_FSIZE), no core files; and it leaves the network
by entering a network namespace of its own (unshare(CLONE_NEWNET), as root or through a user
namespace where the kernel allows unprivileged ones): only a loopback device, down, is left. Where
the kernel allows neither, the network is not cut off: network_isolation() says which applies.

Not enforced: the grader runs as the server's user and reads the files that user reads, so
enabling python graders (TUNERY_PYTHON_GRADERS=on) gives every key holder code execution as that
user, short of the network; run tunery as a user of its own.

What a run ends with: the reward (a finite number grade() returned), PythonRuntimeError (the
grader's code failed: an exception, MemoryError at the limit included, no grade(), a result that is
no number) or PythonServerError (its process did not answer: killed at the time limit, or by a
signal)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref
from functools import lru_cache
from typing import Any

MAX_RESULT_BYTES = 64 << 10  # what a grader's process answers with (its reward, or its error's last lines)
MAX_FILE_BYTES = 64 << 20  # a file the grader writes in its folder
CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000

# The process's own code: it reads its task from stdin, limits itself, runs the grader and writes one
# JSON object to the descriptor that was its stdout (the grader's prints go to /dev/null).
RUNNER = r'''
import ctypes, json, math, os, resource, sys, traceback
task = json.loads(sys.stdin.buffer.read())
answer = os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
libc = ctypes.CDLL(None, use_errno=True)
isolated = any(libc.unshare(flags) == 0 for flags in (%(newnet)d, %(newnet)d | %(newuser)d))
limits = {resource.RLIMIT_AS: task["memory"], resource.RLIMIT_CPU: task["cpu"],
          resource.RLIMIT_FSIZE: %(fsize)d, resource.RLIMIT_CORE: 0}
for kind, value in limits.items():
    resource.setrlimit(kind, (value, value))
out = {"network_isolated": isolated}
reserve = bytearray(1 << 20)  # freed first when the grader ran out of memory: room to report it
try:
    scope = {"__name__": "grader"}
    exec(compile(task["source"], "grader.py", "exec"), scope)
    if not callable(scope.get("grade")):
        raise NameError("the grader's source defines no function grade(sample, item)")
    reward = scope["grade"](task["sample"], task["item"])
    if isinstance(reward, bool) or not isinstance(reward, (int, float)):
        raise TypeError(f"grade() returned {type(reward).__name__}, not a number")
    if not math.isfinite(reward):
        raise ValueError(f"grade() returned {reward}, not a finite number")
    out["reward"] = float(reward)
except BaseException as exc:
    del reserve
    frames = traceback.extract_tb(exc.__traceback__)[1:]  # the grader's frames, not this runner's
    lines = traceback.format_list(frames[-5:]) + traceback.format_exception_only(type(exc), exc)
    exc = None
    out["error"] = "".join(lines)[-4000:].strip()
os.write(answer, json.dumps(out).encode())
''' % {"newnet": CLONE_NEWNET, "newuser": CLONE_NEWUSER, "fsize": MAX_FILE_BYTES}


class PythonRuntimeError(Exception):
    """The grader's code failed; the message is its error's last lines."""


class PythonServerError(Exception):
    """The grader's process gave no answer; `kind` says why (timeout, killed)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class PythonSandbox:
    """Runs python graders, at most `parallel` processes at once (the rest wait their turn)."""

    def __init__(self, timeout_seconds: float, memory_bytes: int, parallel: int | None = None):
        self.timeout = timeout_seconds
        self.memory = memory_bytes
        self.parallel = parallel or os.cpu_count() or 1
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    async def run(self, source: str, sample: dict[str, Any], item: Any) -> float:
        task = json.dumps({"source": source, "sample": sample, "item": item, "memory": self.memory,
                           "cpu": int(self.timeout) + 1}).encode()
        loop = asyncio.get_running_loop()  # a semaphore serves one event loop: the API's, or each of a worker's
        async with self._slots.setdefault(loop, asyncio.Semaphore(self.parallel)):
            folder = tempfile.mkdtemp(prefix="tunery-grader-")
            try:
                return _answer(*await self._run(task, folder), self)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    async def _run(self, task: bytes, folder: str) -> tuple[bytes, int]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", RUNNER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, cwd=folder, env={}, start_new_session=True)
        try:
            return await asyncio.wait_for(_exchange(process, task), self.timeout)
        except TimeoutError:
            raise PythonServerError("timeout", f"The grader did not return within {self.timeout:g} seconds "
                                               f"(TUNERY_PYTHON_GRADER_TIMEOUT_SECONDS).") from None
        finally:  # what the grader started ends with it
            _kill_group(process.pid)
            if process.returncode is None:
                await process.wait()


async def _exchange(process: asyncio.subprocess.Process, task: bytes) -> tuple[bytes, int]:
    try:
        process.stdin.write(task)
        await process.stdin.drain()
        process.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it died first: its exit status says how
    out = b""
    while len(out) <= MAX_RESULT_BYTES:
        chunk = await process.stdout.read(MAX_RESULT_BYTES)
        if not chunk:
            break
        out += chunk
    return out, await process.wait()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _answer(out: bytes, status: int, sandbox: PythonSandbox) -> float:
    try:
        answer = json.loads(out) if len(out) <= MAX_RESULT_BYTES else None
    except ValueError:
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        message = str(answer["error"])
        if message.endswith("MemoryError"):
            message += f" (a python grader may use {sandbox.memory >> 20} MB: TUNERY_PYTHON_GRADER_MEMORY_MB)"
        raise PythonRuntimeError(message)
    if isinstance(answer, dict) and isinstance(answer.get("reward"), float):
        return answer["reward"]
    if status < 0:
        name = signal.Signals(-status).name
        why = " (its CPU time limit)" if -status == signal.SIGXCPU else ""
        raise PythonServerError("killed", f"The grader's process was killed by {name}{why}.")
    raise PythonRuntimeError(f"The grader's process exited (status {status}) before grade() returned.")


@lru_cache(maxsize=1)
def network_isolation() -> bool:
    """Whether graders run without a network here (the kernel lets a process enter a network
    namespace of its own): asked once of a process started as graders are."""
    probe = ("import ctypes\nlibc = ctypes.CDLL(None)\n"
             f"print(any(libc.unshare(f) == 0 for f in ({CLONE_NEWNET}, {CLONE_NEWNET | CLONE_NEWUSER})))")
    result = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, env={}, timeout=60)
    return result.stdout.strip() == "True"
