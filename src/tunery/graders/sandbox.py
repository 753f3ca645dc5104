"""Python graders run as code: each call of a grader's `grade(sample, item)` in a process of its
own (`python -I`: no user site, no PYTHON* variables, the script's folder not on the path), started
with an empty environment (no key of the server's is inherited) in a session of its own.

Before the grader's code runs, the process (the runner below) isolates itself:
- namespaces: it enters new network, PID, mount and IPC namespaces (unshare; as root directly,
  otherwise through a user namespace of its own, its uid and gid mapped to themselves, setgroups
  denied). No network (a loopback device, down), so no way to the server's port; no other process
  of the machine visible or signalled (its PID namespace holds only its init and the grader's
  processes; a new /proc shows only them, so no /proc/<server>/environ, no /proc/<pid>/ns/* to
  setns back through, and without capabilities setns is refused anyway).
- file system: every mount read-only (mount_setattr, recursive from /), an empty tmpfs (mode 0)
  over each `hidden` folder (the server's data directory: the database, every organization's files
  and weights), a fresh tmpfs (64 MB) as its working folder, empty.
- processes: the runner forks the namespace's init, which forks the grader; when the grader
  ends, or the server kills the runner's process group at the time limit, init dies and the kernel
  kills every process left in the namespace, a child that left the session (setsid) included.
- privileges: as root, when the interpreter can be read by others (a folder above it that is not,
  /root mode 700, is covered by a tmpfs holding only the interpreter's prefix, bound in), it drops
  to nobody (setresuid/setresgid 65534, no groups, no capability), and RLIMIT_NPROC (64 processes
  of that user, threads included) stops a fork bomb; where nobody cannot run the interpreter it
  stays uid 0 with every capability dropped (bounding set and capset): it cannot write (read-only
  mounts), see the data directory or signal anything, but can read root's files outside it that
  their owner may read (/etc/shadow), and RLIMIT_NPROC does not apply to uid 0. In a user
  namespace (the server not root) it runs as the server's uid with every capability dropped, with
  RLIMIT_NPROC set (how it counts, the namespace's processes or all of that uid's, is the kernel's
  ucounts accounting; this path is not exercised by the tests, which run as root). PR_SET_NO_NEW_PRIVS
  in every case.
- limits: its address space (RLIMIT_AS: an allocation past it is a MemoryError), CPU seconds
  (RLIMIT_CPU, a backstop to the wall-time limit the server enforces by killing it), the size of
  files it writes (RLIMIT_FSIZE), no core files.
Where namespaces are granted but a mount above fails, no grader runs (a runtime error says why).
Where the kernel grants no namespace at all (no root, unprivileged user namespaces disabled), the
grader runs as before this sandbox had them: only in a network namespace where one can be had
(network_isolation() says), as the server's user, seeing its files, /proc (the server's
environment included) and processes, with no process limit: do not turn python graders on there.

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
MAX_PROCESSES = 64  # processes (threads included) of the unprivileged user graders run as (RLIMIT_NPROC)
CLONE_NEWNET, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNS, CLONE_NEWIPC = 0x40000000, 0x10000000, 0x20000000, 0x20000, 0x8000000

# The process's own code: it reads its task from stdin, limits itself, runs the grader and writes one
# JSON object to the descriptor that was its stdout (the grader's prints go to /dev/null).
RUNNER = r'''
import ctypes, json, math, os, resource, signal, stat, sys, traceback
task = json.loads(sys.stdin.buffer.read())
answer = os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
enforced = []


def mount(source, target, kind, flags, data=None):
    if libc.mount(source and source.encode(), target.encode(), kind and kind.encode(), flags,
                  data and data.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def read_only_everywhere():
    """Every mount of this (private) mount namespace read-only: mount_setattr, recursive from /."""
    attr = (ctypes.c_uint64 * 4)(1, 0, 1 << 18, 0)  # MOUNT_ATTR_RDONLY, propagation MS_PRIVATE
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(attr), ctypes.c_size_t(32)) != 0:
        raise OSError(ctypes.get_errno(), "mount_setattr /")


def expose_interpreter():
    """The interpreter's prefix visible to an unprivileged user when a folder above it is not (/root,
    mode 700): a tmpfs over that folder holding only the prefix, bound in read-only."""
    prefix = os.path.realpath(sys.base_prefix)
    parts = prefix.split("/")[1:]
    for i in range(1, len(parts)):
        above = "/" + "/".join(parts[:i])
        if not os.stat(above).st_mode & stat.S_IXOTH:
            real = os.open(prefix, os.O_PATH)
            mount("tmpfs", above, "tmpfs", 2 | 4, "mode=0755,size=1m")  # nosuid, nodev
            os.makedirs(prefix, 0o755)
            mount(f"/proc/self/fd/{real}", prefix, None, 4096 | 16384)  # MS_BIND | MS_REC
            os.close(real)
            return


def interpreter_usable_by_others():
    for path in filter(os.path.isdir, sys.path):
        parts = os.path.realpath(path).split("/")
        for i in range(1, len(parts) + 1):
            here = "/" + "/".join(parts[1:i])
            if (os.stat(here).st_mode & (stat.S_IXOTH | stat.S_IROTH)) != stat.S_IXOTH | stat.S_IROTH:
                return False
    return True


uid, gid = os.getuid(), os.getgid()
NS = %(ns)d
in_user_ns = unprivileged = False  # unprivileged: the grader runs as nobody (65534)
namespaces = libc.unshare(NS) == 0 if uid == 0 else False
if not namespaces and libc.unshare(NS | %(newuser)d) == 0:
    namespaces = in_user_ns = True
    write("/proc/self/setgroups", "deny")
    write("/proc/self/uid_map", f"{uid} {uid} 1")
    write("/proc/self/gid_map", f"{gid} {gid} 1")
if namespaces:
    enforced += ["network", "pid", "ipc", "mount"]
    try:
        if uid == 0:
            expose_interpreter()
            unprivileged = interpreter_usable_by_others()
        read_only_everywhere()
        enforced.append("read-only")
        for hidden in task["hidden"]:
            if os.path.isdir(hidden):
                mount("tmpfs", hidden, "tmpfs", 1 | 2 | 4 | 8, "mode=0,size=4k")
        enforced.append("hidden")
        mount("tmpfs", os.getcwd(), "tmpfs", 2 | 4, f"mode=0700,size=%(fsize)d,uid={65534 if unprivileged else uid},"
                                                    f"gid={65534 if unprivileged else gid}")
        os.chdir(os.getcwd())
    except OSError as exc:  # namespaces without their mounts would be a sandbox in name only: no grader runs
        os.write(answer, json.dumps({"error": f"The grader's sandbox could not be set up: {exc}"}).encode())
        os._exit(1)
else:  # the network alone, as before, where the kernel allows nothing more
    if any(libc.unshare(flags) == 0 for flags in (%(newnet)d, %(newnet)d | %(newuser)d)):
        enforced.append("network")

if namespaces:  # this process stays outside the new PID namespace: its child is that namespace's init
    for sig in (signal.SIGXCPU, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    init = os.fork()
    if init:
        _, status = os.waitpid(init, 0)
        code = os.waitstatus_to_exitcode(status)
        if code > 128:  # the grader was killed by a signal: so is this process
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            signal.signal(code - 128, signal.SIG_DFL)
            os.kill(os.getpid(), code - 128)
        os._exit(code & 0xFF)
    try:
        mount("proc", "/proc", "proc", 2 | 4 | 8)  # this namespace's processes only
        enforced.append("proc")
    except OSError:  # a kernel that refuses a new proc here (a container's masked /proc): no /proc at all
        try:
            mount("tmpfs", "/proc", "tmpfs", 1 | 2 | 4 | 8, "mode=0,size=4k")
            enforced.append("no-proc")
        except OSError as exc:
            os.write(answer, json.dumps({"error": f"The grader's sandbox could not hide /proc: {exc}"}).encode())
            os._exit(1)
    grader = os.fork()
    if grader:  # init: waits for the grader; when it exits, the kernel kills what is left in the namespace
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == grader:
                code = os.waitstatus_to_exitcode(status)
                os._exit(128 - code if code < 0 else code)

limits = {resource.RLIMIT_AS: task["memory"], resource.RLIMIT_CPU: task["cpu"],
          resource.RLIMIT_FSIZE: %(fsize)d, resource.RLIMIT_CORE: 0}
if unprivileged:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)  # every capability goes with uid 0
    enforced.append("unprivileged")
elif namespaces or uid == 0:  # no capability left (in the user namespace, or as root where nobody cannot run python)
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    libc.capset(ctypes.byref(header), ctypes.byref((ctypes.c_uint32 * 6)()))
    enforced.append("no-capabilities")
if os.getuid() != 0 and (uid == 0 or in_user_ns):  # counted per user: not for root, nor the server's own user
    limits[resource.RLIMIT_NPROC] = %(nproc)d
    enforced.append("nproc")
if libc.prctl(38, 1, 0, 0, 0) == 0:  # PR_SET_NO_NEW_PRIVS
    enforced.append("no-new-privs")
for kind, value in limits.items():
    resource.setrlimit(kind, (value, value))
me = os.getpid()
out = {"enforced": enforced}
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
if os.getpid() == me:  # a process the grader forked answers nothing
    os.write(answer, json.dumps(out).encode())
os._exit(0)
''' % {"newnet": CLONE_NEWNET, "newuser": CLONE_NEWUSER, "fsize": MAX_FILE_BYTES, "nproc": MAX_PROCESSES,
       "ns": CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC}


class PythonRuntimeError(Exception):
    """The grader's code failed; the message is its error's last lines."""


class PythonServerError(Exception):
    """The grader's process gave no answer; `kind` says why (timeout, killed)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class PythonSandbox:
    """Runs python graders, at most `parallel` processes at once (the rest wait their turn)."""

    def __init__(self, timeout_seconds: float, memory_bytes: int, parallel: int | None = None,
                 hidden: tuple[str, ...] = ()):
        """hidden: folders a grader must not see (the server's data directory): an empty tmpfs over each."""
        self.hidden = [os.path.realpath(path) for path in hidden]
        self.timeout = timeout_seconds
        self.memory = memory_bytes
        self.parallel = parallel or os.cpu_count() or 1
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    async def run(self, source: str, sample: dict[str, Any], item: Any) -> float:
        task = json.dumps({"source": source, "sample": sample, "item": item, "memory": self.memory,
                           "hidden": self.hidden, "cpu": int(self.timeout) + 1}).encode()
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
