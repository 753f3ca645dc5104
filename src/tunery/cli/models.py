"""`tunery models`: list, get, delete and export models through the API; `pull` downloads a
Hugging Face model into this machine's cache (where the server runs), ahead of the jobs that use it."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import httpx
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from tunery.cli.client import ApiKey, AsJson, BaseUrl, api_errors, client, console, emit, table, when
from tunery.cli.common import DataDir, fail, settings

app = typer.Typer(help="Models: list, get, delete, export, pull.", no_args_is_help=True)


def _model_rows(models) -> Table:
    return table(["id", "owned by", "created"], [[m.id, m.owned_by, when(m.created)] for m in models])


@app.command("list")
def models_list(base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List base models, fine-tuned models and checkpoints."""
    with api_errors():
        models = list(client(base_url, api_key).models.list())
    emit(models, as_json, _model_rows(models))


@app.command("get")
def models_get(model_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show a model."""
    with api_errors():
        model = client(base_url, api_key).models.retrieve(model_id)
    emit(model, as_json, _model_rows([model]))


@app.command("delete")
def models_delete(model_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Delete a fine-tuned model and its weights."""
    with api_errors():
        deleted = client(base_url, api_key).models.delete(model_id)
    emit(deleted, as_json, f"deleted {deleted.id}")


@app.command("pull")
def models_pull(model_id: str, data_dir: DataDir = None) -> None:
    """Download a Hugging Face model (owner/name) into this machine's cache, with a progress bar."""
    from tunery.catalog import Catalog, UnknownModel
    from tunery.hub import HubError

    catalog = Catalog.from_settings(settings(data_dir=data_dir))
    if catalog.exists(model_id):
        typer.echo(f"{model_id} is here already: {catalog.path(model_id)}")
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"Downloading {catalog.target(model_id)}", total=None)
        try:
            folder = catalog.fetch(model_id, lambda done, total: progress.update(task, completed=done, total=total),
                                   every=0.2)
        except (HubError, UnknownModel) as exc:
            fail(str(exc))
    typer.echo(f"{model_id}: {folder}")


@app.command("export")
def models_export(
    model_id: str,
    out: Annotated[Path, typer.Option("-o", "--out", help="A new or empty folder to write it into")],
    fmt: Annotated[str, typer.Option("--format", help="hf (merged weights), adapter (PEFT LoRA) or gguf "
                                                     "(llama.cpp / Ollama, with a Modelfile)")] = "hf",
    base_url: BaseUrl = None, api_key: ApiKey = None,
) -> None:
    """Take a fine-tuned model (or checkpoint) away: its weights as files other tools load."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        fail(f"{out} exists and is not an empty folder")
    api = client(base_url, api_key)
    url = f"{str(api.base_url).rstrip('/').removesuffix('/v1')}/tunery/models/{quote(model_id, safe='')}/export"
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "export.zip"
        with api_errors(), httpx.stream("GET", url, params={"format": fmt}, timeout=None,
                                        headers={"Authorization": f"Bearer {api.api_key}"}) as response:
            if response.status_code != 200:
                response.read()
                message = response.json().get("error", {}).get("message") if _is_json(response) else response.text
                fail(f"{response.status_code}: {message}")
            with archive.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        if not zipfile.is_zipfile(archive):
            fail(f"the answer from {url} is not a zip archive: is it tunery's API?")
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as files:
            files.extractall(out)
    typer.echo(f"{model_id} ({fmt}) written to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")


def _is_json(response) -> bool:
    return response.headers.get("content-type", "").startswith("application/json")
