"""What the commands that drive a tunery server through its API share: the official openai
client, pointed by OPENAI_BASE_URL and OPENAI_API_KEY (or --base-url / --api-key) at any server,
local or remote (with neither, the local server and the key `tunery serve` keeps in the data
directory); an error as one line with the server's message and a non-zero exit; output as a
readable table, or the API's JSON with --json."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from tunery.cli.common import fail, settings

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"

BaseUrl = Annotated[str | None, typer.Option("--base-url", help=f"API URL [env OPENAI_BASE_URL; default {DEFAULT_BASE_URL}]")]
ApiKey = Annotated[str | None, typer.Option("--api-key", help="API key [env OPENAI_API_KEY; default the local server's]")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]

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
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # tunery's own endpoints, called with httpx
        fail(f"cannot reach the API at {exc.request.url.copy_with(path='/', query=None)}: is `tunery serve` running?")
    except httpx.TransportError as exc:  # reached, then lost mid-answer
        fail(f"the connection to the API at {exc.request.url.copy_with(path='/', query=None)} broke off: "
             f"{exc or type(exc).__name__}")


def emit(obj: Any, as_json: bool, table: Table | str | None) -> None:
    if as_json:
        data = [o.model_dump() for o in obj] if isinstance(obj, list) else obj.model_dump()
        typer.echo(json.dumps(data, indent=2))
    elif table is not None:
        console.print(table)


def when(timestamp: int | None) -> str:
    return "" if timestamp is None else datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def table(columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:  # a narrow terminal folds values onto more lines, never cuts them (ids are copied)
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    return table
