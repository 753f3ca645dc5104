"""`tunery jobs`: create (local files validated as `tunery validate` does, then uploaded), follow
with a progress bar, list, get, cancel, pause, resume, events, checkpoints and results."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tunery.cli.client import ApiKey, AsJson, BaseUrl, api_errors, client, console, emit, table, when
from tunery.cli.common import fail, settings

FOLLOW_POLL_SECONDS = 1.0
FINISHED = ("succeeded", "failed", "cancelled")
METHOD_TYPES = ("supervised", "dpo")  # --method

app = typer.Typer(help="Fine-tuning jobs: create, follow, list, get, cancel, pause, resume, events, "
                       "checkpoints, results.", no_args_is_help=True)


def _job_rows(jobs) -> Table:
    return table(["id", "model", "status", "fine-tuned model", "trained tokens", "created"],
                  [[j.id, j.model, j.status, j.fine_tuned_model, j.trained_tokens, when(j.created_at)] for j in jobs])


def _training_file(api, reference: str, model: str, label: str, as_json: bool, method: str = "supervised") -> str:
    """A file id as it is; a local path validated here first (as `tunery validate` does, and for
    the job's method: a file of a format it cannot train on stops here), then uploaded."""
    path = Path(reference)
    if not path.exists():
        if reference.startswith("file-"):
            return reference
        fail(f"{reference}: neither a file id nor a local file")
    from tunery.catalog import EMBEDDED_MODEL, Catalog
    from tunery.cli.data import check_file

    catalog = Catalog.from_settings(settings())
    base = model.split(":")[1] if model.startswith("ft:") else model
    notes = Console(stderr=True) if as_json else console  # --json: standard output holds the JSON alone
    report = check_file(path, base if catalog.exists(base) else EMBEDDED_MODEL, catalog, console=notes)
    if not report.ok:
        fail(f"{path}: {report.error_count} errors; fix them before uploading (first: {report.errors[0]})")
    from tunery.training.methods import METHODS, format_problem

    if method in METHODS and (wrong := format_problem(method, report.format)):
        fail(f"{path} holds {wrong}" + (" (add --method dpo)" if report.format == "preference" else ""))
    with path.open("rb") as handle:
        uploaded = api.files.create(file=(path.name, handle), purpose="fine-tune")
    notes.print(f"Uploaded {label} {path} as {uploaded.id}")
    return uploaded.id


@app.command("create")
def jobs_create(
    training_file: Annotated[str, typer.Option("-t", "--training-file", help="A file id, or a local JSONL path")],
    model: Annotated[str, typer.Option("-m", "--model", help="Base or fine-tuned model to start from")],
    validation_file: Annotated[str | None, typer.Option("-v", "--validation-file", help="A file id or local path")] = None,
    suffix: Annotated[str | None, typer.Option(help="Up to 64 characters in the model's name")] = None,
    n_epochs: Annotated[int | None, typer.Option("--n-epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    learning_rate_multiplier: Annotated[float | None, typer.Option("--learning-rate-multiplier")] = None,
    method: Annotated[str, typer.Option("--method", help="supervised, or dpo (preference data)")] = "supervised",
    beta: Annotated[str | None, typer.Option("--beta", help="DPO's beta, (0, 2] or auto; with --method dpo")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Follow the job until it ends")] = False,
    base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Create a fine-tuning job; local files are validated and uploaded first."""
    hyperparameters: dict[str, Any] = {k: v for k, v in (("n_epochs", n_epochs), ("batch_size", batch_size),
                                       ("learning_rate_multiplier", learning_rate_multiplier)) if v is not None}
    if method not in METHOD_TYPES:
        fail(f"--method must be {' or '.join(METHOD_TYPES)}, not {method!r}", 2)
    if beta is not None:
        if method != "dpo":
            fail("--beta is DPO's hyperparameter: use it with --method dpo", 2)
        hyperparameters["beta"] = _beta(beta)
    with api_errors():
        api = client(base_url, api_key)
        options: dict[str, Any] = {"model": model, "training_file": _training_file(
            api, training_file, model, "training file", as_json, method)}
        if validation_file:
            options["validation_file"] = _training_file(api, validation_file, model, "validation file", as_json, method)
        options |= {k: v for k, v in (("suffix", suffix), ("seed", seed)) if v is not None}
        if method == "dpo":  # OpenAI's shape; the top-level hyperparameters are supervised jobs' only
            options["method"] = {"type": "dpo", "dpo": {"hyperparameters": hyperparameters}}
        elif hyperparameters:
            options["hyperparameters"] = hyperparameters
        job = api.fine_tuning.jobs.create(**options)
    emit(job, as_json, f"Created fine-tuning job {job.id}{_dpo_note(job)}")
    if follow:
        _follow(api, job.id, as_json)


def _beta(text: str) -> float | str:
    """--beta: a number, or "auto"."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        fail(f"--beta must be a number or auto, not {text!r}", 2)
    return value


def _dpo_note(job) -> str:
    """A DPO job's method and beta, as the server echoes them ("auto" until the job resolves it)."""
    dpo = job.method.dpo if job.method is not None and job.method.type == "dpo" else None
    if dpo is None:
        return ""
    beta = dpo.hyperparameters.beta if dpo.hyperparameters is not None else None
    return f" (method dpo, beta {beta if beta is not None else 'auto'})"


@app.command("follow")
def jobs_follow(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Stream a job's events with a progress bar until it ends; print its model, or its error."""
    _follow(client(base_url, api_key), job_id, as_json)


def _follow(api, job_id: str, as_json: bool) -> None:
    seen: set[str] = set()
    try:
        with api_errors(), Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                                    console=console, disable=as_json, transient=True) as progress:
            bar = progress.add_task("training", total=None, loss="-")
            while True:
                job = api.fine_tuning.jobs.retrieve(job_id)  # read before the events: none are missed at the end
                fresh = [e for e in api.fine_tuning.jobs.list_events(job_id, limit=100).data if e.id not in seen]
                for event in reversed(fresh):  # oldest first
                    seen.add(event.id)
                    if as_json:
                        typer.echo(json.dumps(event.model_dump()))
                    elif event.type == "metrics" and event.data:
                        progress.update(bar, completed=event.data["step"], total=event.data["total_steps"],
                                        loss=f"{event.data['train_loss']:.3f}")
                    else:
                        progress.console.print(f"[{when(event.created_at)}] {event.message}")
                if job.status in FINISHED or job.status == "paused":
                    break
                time.sleep(FOLLOW_POLL_SECONDS)
    except KeyboardInterrupt:
        typer.echo(f"\nStopped following; the job goes on. Follow it again with: tunery jobs follow {job_id}", err=True)
        raise typer.Exit(130) from None
    if job.status == "succeeded":
        typer.echo(job.fine_tuned_model if as_json else f"Fine-tuned model: {job.fine_tuned_model}")
    elif job.status == "paused":
        typer.echo(f"The job is paused; resume it with: tunery jobs resume {job_id}")
    elif job.status == "failed":
        fail(f"the job failed: {job.error.message if job.error else 'no reason given'}")
    else:
        fail("the job was cancelled")


@app.command("list")
def jobs_list(limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 20,
              base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List fine-tuning jobs, newest first."""
    with api_errors():
        jobs = list(client(base_url, api_key).fine_tuning.jobs.list(limit=min(limit, 100)))[:limit]
    emit(jobs, as_json, _job_rows(jobs))


def _job_command(name: str, doc: str):
    def command(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
        with api_errors():
            job = getattr(client(base_url, api_key).fine_tuning.jobs, name)(job_id)
        emit(job, as_json, _job_rows([job]))

    command.__doc__ = doc
    app.command(name if name != "retrieve" else "get")(command)


_job_command("retrieve", "Show a job.")
_job_command("cancel", "Cancel a job.")
_job_command("pause", "Pause a job (a running one stops after its step, with a checkpoint).")
_job_command("resume", "Resume a paused job from its latest checkpoint.")


@app.command("events")
def jobs_events(job_id: str, limit: Annotated[int, typer.Option(help="The newest this many")] = 20,
                base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """A job's events, oldest of the newest `limit` first."""
    with api_errors():
        events = list(client(base_url, api_key).fine_tuning.jobs.list_events(job_id, limit=min(limit, 100)))[:limit]
    events.reverse()
    emit(events, as_json, table(["created", "level", "message"], [[when(e.created_at), e.level, e.message] for e in events]))


@app.command("checkpoints")
def jobs_checkpoints(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """A job's checkpoints, newest first (each is a model to chat with)."""
    with api_errors():
        checkpoints = list(client(base_url, api_key).fine_tuning.jobs.checkpoints.list(job_id))
    emit(checkpoints, as_json, table(["step", "model", "train loss", "created"], [
        [c.step_number, c.fine_tuned_model_checkpoint, _loss(c.metrics.train_loss), when(c.created_at)]
        for c in checkpoints]))


def _loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


@app.command("results")
def jobs_results(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Print a finished job's result file (the step metrics, CSV)."""
    with api_errors():
        api = client(base_url, api_key)
        job = api.fine_tuning.jobs.retrieve(job_id)
        if not job.result_files:
            fail(f"job {job_id} is {job.status} and has no result file yet")
        typer.echo(api.files.content(job.result_files[0]).text, nl=False)
