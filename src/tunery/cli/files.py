"""`tunery files`: upload, list, get, delete and download files through the API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tunery.cli.client import ApiKey, AsJson, BaseUrl, api_errors, client, emit, table, when
from tunery.cli.common import fail

app = typer.Typer(help="Files: upload, list, get, delete, download.", no_args_is_help=True)


def _file_rows(files) -> Table:
    return table(["id", "filename", "purpose", "bytes", "created"],
                  [[f.id, f.filename, f.purpose, f.bytes, when(f.created_at)] for f in files])


@app.command("upload")
def files_upload(file: Annotated[Path, typer.Argument(help="The file to upload")],
                 purpose: Annotated[str, typer.Option(help="What the file is for")] = "fine-tune",
                 base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Upload a file (a fine-tune file is validated by the server)."""
    if not file.is_file():
        fail(f"{file}: no such file")
    with api_errors(), open(file, "rb") as handle:
        uploaded = client(base_url, api_key).files.create(file=(file.name, handle), purpose=purpose)
    emit(uploaded, as_json, uploaded.id)


@app.command("list")
def files_list(purpose: Annotated[str | None, typer.Option(help="Only files with this purpose")] = None,
               base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List files, newest first."""
    with api_errors():
        files = list(client(base_url, api_key).files.list(**({"purpose": purpose} if purpose else {})))
    emit(files, as_json, _file_rows(files))


@app.command("get")
def files_get(file_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show a file."""
    with api_errors():
        file = client(base_url, api_key).files.retrieve(file_id)
    emit(file, as_json, _file_rows([file]))


@app.command("delete")
def files_delete(file_id: str, base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Delete a file."""
    with api_errors():
        deleted = client(base_url, api_key).files.delete(file_id)
    emit(deleted, as_json, f"deleted {deleted.id}")


@app.command("download")
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
