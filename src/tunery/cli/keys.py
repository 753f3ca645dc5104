"""`tunery keys create | list | revoke`: API keys of organizations, managed on the server's own
data directory (an administrator's commands: they do not go through the API)."""

from __future__ import annotations

import datetime
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tunery.cli.common import DataDir, fail, settings
from tunery.storage import Database
from tunery.storage.orgs import OrgsRepo

app = typer.Typer(help="API keys of organizations (on this server's data directory).", no_args_is_help=True)


def _repo(data_dir) -> OrgsRepo:
    config = settings(data_dir=data_dir)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(config.database)
    database.create_schema()
    return OrgsRepo(database)


@app.command()
def create(org: Annotated[str, typer.Option("--org", help="Organization name (created if new)")] = "default",
           data_dir: DataDir = None) -> None:
    """Create a key for an organization and print it (it is shown this once)."""
    if not org or len(org) > 64 or not org.replace("-", "").replace("_", "").isalnum():
        fail("an organization name is 1-64 letters, digits, '-' and '_'")
    repo = _repo(data_dir)
    typer.echo(repo.create_key(repo.ensure(org).id))


@app.command("list")
def list_keys(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
              data_dir: DataDir = None) -> None:
    """List keys: organization, hint, created, revoked, id."""
    rows = [{"id": key.id, "organization": org, "hint": key.hint, "created_at": key.created_at,
             "revoked_at": key.revoked_at} for key, org in _repo(data_dir).keys()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("organization", "hint", "created", "revoked")
    table.add_column("id", no_wrap=True)  # copied into `tunery keys revoke`: never cut
    for row in rows:
        table.add_row(row["organization"], row["hint"] or "", _when(row["created_at"]), _when(row["revoked_at"]), row["id"])
    Console().print(table)


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `tunery keys list`)")],
           data_dir: DataDir = None) -> None:
    """Revoke a key: requests with it are refused from now on."""
    if not _repo(data_dir).revoke(key_id):
        fail(f"no active key {key_id!r}")
    typer.echo(f"revoked {key_id}")


def _when(timestamp: int | None) -> str:
    return "" if timestamp is None else datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")
