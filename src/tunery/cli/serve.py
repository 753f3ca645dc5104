"""`tunery serve` (the API and a supervised worker process), `tunery worker` (a worker alone, on
this machine or another that shares the database and the data directory) and `tunery workers`
(the live workers)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Annotated, Optional

import typer

from tunery.cli.common import DataDir, fail, settings as _settings
from tunery.config import DEFAULT_ORGANIZATION, Settings

DatabaseUrl = Annotated[Optional[str], typer.Option(
    "--database-url", help="Jobs database [env TUNERY_DATABASE_URL; default the data directory's SQLite file]")]
# A worker that died before it was ready (it never reported itself: a bad setting, a failing
# start) is started again after RESTART_BACKOFF seconds, doubling up to the last while it keeps
# failing so; one that died at work (killed, out of memory) starts again after the first: the job it
# held counts the deaths and fails after TUNERY_JOB_MAX_ATTEMPTS.
RESTART_BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
SERVE_WORKER_NICENESS = 10  # how much lower than the API the worker of `tunery serve` runs


def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on [default 127.0.0.1]")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on [default 8000]")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Serve the API without a job worker")] = False,
) -> None:
    """Start the HTTP API and a job worker process (started again whenever it dies)."""
    import uvicorn

    from tunery.api.app import create_app

    settings = _settings(host=host, port=port, data_dir=data_dir, database_url=database_url)
    if settings.node_rank > 0:
        fail(f"TUNERY_NODE_RANK={settings.node_rank}: `tunery serve` runs on the first machine (0); the others run "
             "`tunery worker`", 2)
    _check_hardware(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.StreamHandler()  # tunery's own lines (faults with their request ids, serving notes)
    handler.setFormatter(logging.Formatter("%(asctime)s api %(levelname)s %(message)s"))
    logging.getLogger("tunery").addHandler(handler)
    logging.getLogger("tunery").setLevel(logging.INFO)
    worker_env = dict(os.environ)  # training keeps OpenMP's default
    # Serving's OpenMP threads (llama.cpp's) sleep at their barriers instead of spinning: read once
    # as OpenMP loads (with torch), so set before anything imports it (inference/llamacpp.py says why).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    api = _with_database(settings, lambda: create_app(settings))
    key = api.state.container.organizations.default_key()
    base_url = f"http://{settings.host}:{settings.port}/v1"
    typer.echo(f"tunery serving on {base_url} (data in {settings.data_dir.resolve()})")
    typer.echo(f"Console: http://{settings.host}:{settings.port}/ (sign in with the key below)")
    typer.echo(f"API key for organization '{DEFAULT_ORGANIZATION}': {key}")
    typer.echo(f"  export OPENAI_BASE_URL={base_url} OPENAI_API_KEY={key}", nl=True)
    supervisor = None
    if not no_worker:
        queue = api.state.container.queue
        supervisor = WorkerSupervisor([sys.executable, "-m", "tunery", "worker", "--data-dir", str(settings.data_dir),
                                       "--exit-with-parent", str(os.getpid())]
                                      + (["--database-url", settings.database_url] if settings.database_url else []),
                                      env=worker_env, reported=lambda pid: any(w.pid == pid for w in queue.live_workers()))
        supervisor.start()
    try:
        uvicorn.run(api, host=settings.host, port=settings.port, log_level="info")
    finally:  # on a signal uvicorn re-raises it and this may not run; the worker then sees us gone
        if supervisor is not None:
            supervisor.stop()


class WorkerSupervisor:
    """Runs the worker process of `tunery serve` and starts it again when it dies (killed, out of
    memory, a crash), after a back-off that grows while it keeps dying; each death is logged with
    its cause. The job it held is taken over by the new worker."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None,
                 reported: Callable[[int], bool] = lambda pid: False):
        """reported(pid): whether the worker of that process id reported itself ready (its heartbeat)."""
        self.command, self.env, self.reported = command, env, reported
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._log = logging.getLogger("tunery.serve")

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self.process = subprocess.Popen(self.command, env=self.env)
                self._started = time.monotonic()

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            code = self.process.wait()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - self._started
            try:
                at_work = self.reported(self.process.pid)
            except Exception:  # the database is unreachable: back off as for a failing start
                at_work = False
            failures = 1 if at_work else failures + 1
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF)) - 1]
            self._log.error("the worker (pid %d) %s after %.0f s; starting it again in %.0f s",
                            self.process.pid, exit_cause(code), ran, delay)
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: asked first (its job is checkpointed and handed back), killed if it
        has not gone within `timeout`."""
        with self._lock:
            self._stopping.set()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def exit_cause(code: int) -> str:
    """A process's exit status in words: "was killed by SIGKILL", "exited with status 1"."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer sends it, as does kill -9)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {code}"


def worker(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    device: Annotated[Optional[str], typer.Option(
        "--device", help="What this worker trains on, as its claims and `tunery workers` see it: cpu or cuda "
                         "[env TUNERY_WORKER_DEVICE; default TUNERY_DEVICE's]")] = None,
    exit_with_parent: Annotated[Optional[int], typer.Option(hidden=True, help="Exit once this process is gone")] = None,
) -> None:
    """Run a job worker alone: more workers on this machine, or one on another machine that shares
    the database (TUNERY_DATABASE_URL, PostgreSQL) and the data directory (a shared filesystem).
    SIGTERM or Ctrl-C: the job in hand is checkpointed and handed back to the queue (a second one
    stops at once; the job is then taken over when the worker's lease runs out)."""
    from tunery.jobs.worker import Worker
    from tunery.services.container import Container

    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    settings = _settings(data_dir=data_dir, database_url=database_url, worker_device=device)
    _check_hardware(settings, always=True)
    if exit_with_parent is not None:
        # The worker of `tunery serve` shares the machine with the API: training yields the CPU to
        # requests (bench/load.py: list and retrieve p99 930 -> 386 ms while a job trained).
        os.nice(SERVE_WORKER_NICENESS)
    instance = _with_database(settings, lambda: Worker(Container(settings), parent_pid=exit_with_parent))

    def stop(*_) -> None:  # the first signal stops at the next step; a second one at once
        if instance.stopping.is_set():
            raise KeyboardInterrupt
        instance.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        instance.warm_up()
        instance.run_forever()
    except KeyboardInterrupt:
        pass


def workers(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the live workers: host, device, the job each holds, its last heartbeat."""
    from rich.console import Console
    from rich.table import Table

    from tunery.services.container import Container

    settings = _settings(data_dir=data_dir, database_url=database_url)
    found = _with_database(settings, lambda: Container(settings).queue.live_workers())
    if as_json:
        typer.echo(json.dumps([info.__dict__ for info in found], indent=2))
        return
    if not found:
        typer.echo("No live workers (start one with `tunery serve` or `tunery worker`).")
        return
    table = Table("worker", "host", "device", "job", "up since", "last heartbeat")
    for info in found:
        table.add_row(info.id, info.host, info.device, info.job_id or "-",
                      datetime.datetime.fromtimestamp(info.started_at).strftime("%Y-%m-%d %H:%M:%S"),
                      f"{max(time.time() - info.heartbeat_at, 0):.0f} s ago")
    Console(width=200).print(table)


def _with_database(settings: Settings, make):
    """make(), or one line and exit 2 where the database cannot be reached or is not one tunery runs on."""
    from sqlalchemy.exc import OperationalError

    from tunery.storage.db import DatabaseError

    try:
        return make()
    except DatabaseError as exc:
        fail(str(exc), 2)
    except OperationalError as exc:
        from sqlalchemy import make_url

        reason = str(exc.orig or exc).strip().splitlines()[0]
        shown = make_url(settings.database).render_as_string(hide_password=True)
        fail(f"cannot reach the database {shown}: {reason}", 2)


def _check_hardware(settings: Settings, always: bool = False) -> None:
    """Refuse, in one line, a device, attention or dtype setting this machine cannot honour. The
    API checks only settings that name something (their "auto" cannot fail), to start without torch."""
    named = (settings.device, settings.attention, settings.inference_dtype) != ("auto", "auto", "auto")
    if not (always or named or settings.worker_devices):
        return
    from tunery.devices import DeviceError, check, describe, worker_devices

    try:
        device = check(settings.device, settings.attention, settings.inference_dtype)
    except DeviceError as exc:
        fail(str(exc), 2)
    try:
        worker_devices(settings.worker_devices, settings.device)  # serve's worker trains on them
    except DeviceError as exc:
        fail(f"TUNERY_WORKER_DEVICES={settings.worker_devices}: {exc}", 2)
    logging.getLogger("tunery").info("computing on %s", describe(device))
