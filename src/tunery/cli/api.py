"""The commands that drive a tunery server through its API, with the official openai client:
`tunery files | jobs | models`, `tunery chat` and `tunery complete`. They work against any server,
local or remote: OPENAI_BASE_URL and OPENAI_API_KEY (or --base-url / --api-key) say which; with
neither, the local server and the key `tunery serve` keeps in the data directory.

Output is a readable table by default and the API's JSON with --json; an error is one line with
the server's message and a non-zero exit."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tunery.cli.common import fail, settings

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
FOLLOW_POLL_SECONDS = 1.0
FINISHED = ("succeeded", "failed", "cancelled")

BaseUrl = Annotated[str | None, typer.Option("--base-url", help=f"API URL [env OPENAI_BASE_URL; default {DEFAULT_BASE_URL}]")]
ApiKey = Annotated[str | None, typer.Option("--api-key", help="API key [env OPENAI_API_KEY; default the local server's]")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]

files_app = typer.Typer(help="Files: upload, list, get, delete, download.", no_args_is_help=True)
jobs_app = typer.Typer(help="Fine-tuning jobs: create, follow, list, get, cancel, pause, resume, events, "
                            "checkpoints, results.", no_args_is_help=True)
models_app = typer.Typer(help="Models: list, get, delete.", no_args_is_help=True)
console = Console()


def client(base_url: str | None, api_key: str | None):
    from openai import OpenAI

    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    api_key = api_key or os.environ.get("OPENAI_API_KEY") or _local_key()
    if not api_key:
        fail("no API key: pass --api-key or set OPENAI_API_KEY (`tunery serve` prints one)")
    return OpenAI(base_url=base_url, api_key=api_key, max_retries=1)


def _local_key() -> str | None:
    """The key `tunery serve` keeps for organization "default" in the local data directory."""
    from tunery.storage import BlobStore

    return BlobStore(settings().data_dir).read_secret("default_api_key")


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """Any failure of a call: one line (the server's own message) and exit 1."""
    import openai

    try:
        yield
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or exc.message
        fail(f"{exc.status_code}: {message}" + (f" (param: {body['param']})" if body.get("param") else ""))
    except openai.APIConnectionError as exc:
        fail(f"cannot reach the API at {exc.request.url.copy_with(path='/', query=None)}: is `tunery serve` running?")


def emit(obj: Any, as_json: bool, table: Table | str | None) -> None:
    if as_json:
        data = [o.model_dump() for o in obj] if isinstance(obj, list) else obj.model_dump()
        typer.echo(json.dumps(data, indent=2))
    elif table is not None:
        console.print(table)


def _when(timestamp: int | None) -> str:
    return "" if timestamp is None else datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _table(columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:  # a narrow terminal folds values onto more lines, never cuts them (ids are copied)
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table


# files -----------------------------------------------------------------------------------------------
def _file_rows(files) -> Table:
    return _table(["id", "filename", "purpose", "bytes", "created"],
                  [[f.id, f.filename, f.purpose, f.bytes, _when(f.created_at)] for f in files])


@files_app.command("upload")
def files_upload(file: Annotated[Path, typer.Argument(help="The file to upload")],
                 purpose: Annotated[str, typer.Option(help="What the file is for")] = "fine-tune",
                 base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Upload a file (a fine-tune file is validated by the server)."""
    if not file.is_file():
        fail(f"{file}: no such file")
    with api_errors(), open(file, "rb") as handle:
        uploaded = client(base_url, api_key).files.create(file=(file.name, handle), purpose=purpose)
    emit(uploaded, as_json, uploaded.id)


@files_app.command("list")
def files_list(purpose: Annotated[str | None, typer.Option(help="Only files with this purpose")] = None,
               base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List files, newest first."""
    with api_errors():
        files = list(client(base_url, api_key).files.list(**({"purpose": purpose} if purpose else {})))
    emit(files, as_json, _file_rows(files))


@files_app.command("get")
def files_get(file_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show a file."""
    with api_errors():
        file = client(base_url, api_key).files.retrieve(file_id)
    emit(file, as_json, _file_rows([file]))


@files_app.command("delete")
def files_delete(file_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Delete a file."""
    with api_errors():
        deleted = client(base_url, api_key).files.delete(file_id)
    emit(deleted, as_json, f"deleted {deleted.id}")


@files_app.command("download")
def files_download(file_id: str,
                   out: Annotated[Path | None, typer.Option("-o", "--out", help="Where to write it ('-': standard "
                                                            "output) [default: the file's name, here]")] = None,
                   base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Download a file's content."""
    with api_errors():
        api = client(base_url, api_key)
        content = api.files.content(file_id).content
        target = out or Path(api.files.retrieve(file_id).filename).name
    if str(target) == "-":
        sys.stdout.buffer.write(content)
        return
    Path(target).write_bytes(content)
    typer.echo(f"wrote {target} ({len(content)} bytes)")


# jobs ------------------------------------------------------------------------------------------------
def _job_rows(jobs) -> Table:
    return _table(["id", "model", "status", "fine-tuned model", "trained tokens", "created"],
                  [[j.id, j.model, j.status, j.fine_tuned_model, j.trained_tokens, _when(j.created_at)] for j in jobs])


def _training_file(api, reference: str, model: str, label: str, as_json: bool) -> str:
    """A file id as it is; a local path validated here first (as `tunery validate` does), then uploaded."""
    path = Path(reference)
    if not path.exists():
        if reference.startswith("file-"):
            return reference
        fail(f"{reference}: neither a file id nor a local file")
    from tunery.catalog import EMBEDDED_MODEL, Catalog
    from tunery.cli.data import check_file
    from tunery.storage import BlobStore

    catalog = Catalog(BlobStore(settings().data_dir))
    base = model.split(":")[1] if model.startswith("ft:") else model
    notes = Console(stderr=True) if as_json else console  # --json: standard output holds the JSON alone
    report = check_file(path, base if catalog.exists(base) else EMBEDDED_MODEL, catalog, console=notes)
    if not report.ok:
        fail(f"{path}: {report.error_count} errors; fix them before uploading (first: {report.errors[0]})")
    with path.open("rb") as handle:
        uploaded = api.files.create(file=(path.name, handle), purpose="fine-tune")
    notes.print(f"Uploaded {label} {path} as {uploaded.id}")
    return uploaded.id


@jobs_app.command("create")
def jobs_create(
    training_file: Annotated[str, typer.Option("-t", "--training-file", help="A file id, or a local JSONL path")],
    model: Annotated[str, typer.Option("-m", "--model", help="Base or fine-tuned model to start from")],
    validation_file: Annotated[str | None, typer.Option("-v", "--validation-file", help="A file id or local path")] = None,
    suffix: Annotated[str | None, typer.Option(help="Up to 64 characters in the model's name")] = None,
    n_epochs: Annotated[int | None, typer.Option("--n-epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    learning_rate_multiplier: Annotated[float | None, typer.Option("--learning-rate-multiplier")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Follow the job until it ends")] = False,
    base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Create a fine-tuning job; local files are validated and uploaded first."""
    hyperparameters = {k: v for k, v in (("n_epochs", n_epochs), ("batch_size", batch_size),
                                         ("learning_rate_multiplier", learning_rate_multiplier)) if v is not None}
    with api_errors():
        api = client(base_url, api_key)
        options: dict[str, Any] = {"model": model, "training_file": _training_file(api, training_file, model, "training file", as_json)}
        if validation_file:
            options["validation_file"] = _training_file(api, validation_file, model, "validation file", as_json)
        options |= {k: v for k, v in (("suffix", suffix), ("seed", seed)) if v is not None}
        if hyperparameters:
            options["hyperparameters"] = hyperparameters
        job = api.fine_tuning.jobs.create(**options)
    emit(job, as_json, f"Created fine-tuning job {job.id}")
    if follow:
        _follow(api, job.id, as_json)


@jobs_app.command("follow")
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
                        progress.console.print(f"[{_when(event.created_at)}] {event.message}")
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


@jobs_app.command("list")
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
    jobs_app.command(name if name != "retrieve" else "get")(command)


_job_command("retrieve", "Show a job.")
_job_command("cancel", "Cancel a job.")
_job_command("pause", "Pause a job (a running one stops after its step, with a checkpoint).")
_job_command("resume", "Resume a paused job from its latest checkpoint.")


@jobs_app.command("events")
def jobs_events(job_id: str, limit: Annotated[int, typer.Option(help="The newest this many")] = 20,
                base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """A job's events, oldest of the newest `limit` first."""
    with api_errors():
        events = list(client(base_url, api_key).fine_tuning.jobs.list_events(job_id, limit=min(limit, 100)))[:limit]
    events.reverse()
    emit(events, as_json, _table(["created", "level", "message"], [[_when(e.created_at), e.level, e.message] for e in events]))


@jobs_app.command("checkpoints")
def jobs_checkpoints(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """A job's checkpoints, newest first (each is a model to chat with)."""
    with api_errors():
        checkpoints = list(client(base_url, api_key).fine_tuning.jobs.checkpoints.list(job_id))
    emit(checkpoints, as_json, _table(["step", "model", "train loss", "created"], [
        [c.step_number, c.fine_tuned_model_checkpoint, _loss(c.metrics.train_loss), _when(c.created_at)]
        for c in checkpoints]))


def _loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


@jobs_app.command("results")
def jobs_results(job_id: str, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Print a finished job's result file (the step metrics, CSV)."""
    with api_errors():
        api = client(base_url, api_key)
        job = api.fine_tuning.jobs.retrieve(job_id)
        if not job.result_files:
            fail(f"job {job_id} is {job.status} and has no result file yet")
        typer.echo(api.files.content(job.result_files[0]).text, nl=False)


# models ----------------------------------------------------------------------------------------------
def _model_rows(models) -> Table:
    return _table(["id", "owned by", "created"], [[m.id, m.owned_by, _when(m.created)] for m in models])


@models_app.command("list")
def models_list(base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List base models, fine-tuned models and checkpoints."""
    with api_errors():
        models = list(client(base_url, api_key).models.list())
    emit(models, as_json, _model_rows(models))


@models_app.command("get")
def models_get(model_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show a model."""
    with api_errors():
        model = client(base_url, api_key).models.retrieve(model_id)
    emit(model, as_json, _model_rows([model]))


@models_app.command("delete")
def models_delete(model_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Delete a fine-tuned model and its weights."""
    with api_errors():
        deleted = client(base_url, api_key).models.delete(model_id)
    emit(deleted, as_json, f"deleted {deleted.id}")


# chat and completions ----------------------------------------------------------------------------------
def chat(
    model: Annotated[str, typer.Option("-m", "--model", help="The model to talk to")],
    message: Annotated[str | None, typer.Argument(help="A message; without one, talk interactively")] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    base_url: BaseUrl = None, api_key: ApiKey = None,
) -> None:
    """Chat with a model, the answer streamed as it is written."""
    api = client(base_url, api_key)
    messages = [{"role": "system", "content": system}] if system else []
    options = {k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None}

    def answer(text: str) -> None:
        messages.append({"role": "user", "content": text})
        said = []
        with api_errors():
            for chunk in api.chat.completions.create(model=model, messages=messages, stream=True, **options):
                delta = chunk.choices[0].delta if chunk.choices else None
                if delta and delta.content:
                    said.append(delta.content)
                    typer.echo(delta.content, nl=False)
                for call in (delta.tool_calls or []) if delta else []:
                    typer.echo(f"[tool call] {call.function.name}({call.function.arguments})", nl=False)
        typer.echo()
        messages.append({"role": "assistant", "content": "".join(said)})

    if message is not None:
        answer(message)
        return
    typer.echo(f"Talking to {model}; an empty line or Ctrl-D ends.", err=True)
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo()
            return
        if not text.strip():
            return
        answer(text)


def complete(
    model: Annotated[str, typer.Option("-m", "--model", help="The model")],
    prompt: Annotated[str, typer.Argument(help="The prompt (legacy completions: no chat template)")],
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 16,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="A stop sequence (repeatable)")] = None,
    logprobs: Annotated[int | None, typer.Option("--logprobs", help="Show the N likeliest tokens at each step")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Complete a prompt (the legacy completions endpoint)."""
    options = {k: v for k, v in (("stop", stop), ("logprobs", logprobs), ("temperature", temperature)) if v}
    if temperature == 0:
        options["temperature"] = 0
    with api_errors():
        answer = client(base_url, api_key).completions.create(model=model, prompt=prompt, max_tokens=max_tokens, **options)
    if as_json:
        emit(answer, True, None)
        return
    choice = answer.choices[0]
    typer.echo(choice.text)
    if choice.logprobs is not None:
        console.print(_table(["token", "logprob", "likeliest"], [
            [repr(token), f"{value:.4f}", ", ".join(f"{k!r} {v:.3f}" for k, v in (top or {}).items())]
            for token, value, top in zip(choice.logprobs.tokens, choice.logprobs.token_logprobs,
                                         choice.logprobs.top_logprobs)]))
