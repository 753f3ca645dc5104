"""`tunery serve` (the API and a worker process) and `tunery worker` (a worker alone)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Annotated, Optional

import typer

from tunery.cli.common import DataDir, fail, settings as _settings
from tunery.config import DEFAULT_ORGANIZATION, Settings


def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on [default 127.0.0.1]")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port to listen on [default 8000]")] = None,
    data_dir: DataDir = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Serve the API without a job worker")] = False,
) -> None:
    """Start the HTTP API and a job worker process."""
    import uvicorn

    from tunery.api.app import create_app

    settings = _settings(host=host, port=port, data_dir=data_dir)
    _check_hardware(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.StreamHandler()  # tunery's own lines (faults with their request ids, serving notes)
    handler.setFormatter(logging.Formatter("%(asctime)s api %(levelname)s %(message)s"))
    logging.getLogger("tunery").addHandler(handler)
    logging.getLogger("tunery").setLevel(logging.INFO)
    api = create_app(settings)
    key = api.state.container.organizations.default_key()
    base_url = f"http://{settings.host}:{settings.port}/v1"
    typer.echo(f"tunery serving on {base_url} (data in {settings.data_dir.resolve()})")
    typer.echo(f"Console: http://{settings.host}:{settings.port}/ (sign in with the key below)")
    typer.echo(f"API key for organization '{DEFAULT_ORGANIZATION}': {key}")
    typer.echo(f"  export OPENAI_BASE_URL={base_url} OPENAI_API_KEY={key}", nl=True)
    worker_process = None
    if not no_worker:
        worker_process = subprocess.Popen([sys.executable, "-m", "tunery", "worker", "--data-dir", str(settings.data_dir),
                                           "--exit-with-parent", str(os.getpid())])
    try:
        uvicorn.run(api, host=settings.host, port=settings.port, log_level="info")
    finally:  # on a signal uvicorn re-raises it and this never runs; the worker then sees us gone
        if worker_process is not None:
            worker_process.terminate()
            worker_process.wait(timeout=30)


def worker(
    data_dir: DataDir = None,
    exit_with_parent: Annotated[Optional[int], typer.Option(hidden=True, help="Exit once this process is gone")] = None,
) -> None:
    """Run a job worker alone (more workers, or one on another machine sharing the state)."""
    from tunery.jobs.worker import Worker
    from tunery.services.container import Container

    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    settings = _settings(data_dir=data_dir)
    _check_hardware(settings, always=True)
    try:
        instance = Worker(Container(settings), parent_pid=exit_with_parent)
        instance.warm_up()
        instance.run_forever()
    except KeyboardInterrupt:
        pass


def _check_hardware(settings: Settings, always: bool = False) -> None:
    """Refuse, in one line, a device, attention or dtype setting this machine cannot honour. The
    API checks only settings that name something (their "auto" cannot fail), to start without torch."""
    named = (settings.device, settings.attention, settings.inference_dtype) != ("auto", "auto", "auto")
    if not (always or named):
        return
    from tunery.devices import DeviceError, check, describe

    try:
        device = check(settings.device, settings.attention, settings.inference_dtype)
    except DeviceError as exc:
        fail(str(exc), 2)
    logging.getLogger("tunery").info("computing on %s", describe(device))
