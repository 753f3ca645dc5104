"""`tunery models`: list, get and delete models through the API."""

from __future__ import annotations

import typer
from rich.table import Table

from tunery.cli.client import ApiKey, AsJson, BaseUrl, api_errors, client, emit, table, when

app = typer.Typer(help="Models: list, get, delete.", no_args_is_help=True)


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
