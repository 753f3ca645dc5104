"""The `tunery` command line: one Typer app, a module per group of commands; each command's
docstring is its help. User errors print one line and exit non-zero, never a traceback."""

from __future__ import annotations

import typer

from tunery.cli import chat, data, evals, files, jobs, keys, models, serve
from tunery.cli.common import quiet_libraries

app = typer.Typer(help="tunery: the OpenAI fine-tuning API, self-hosted.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.command()(serve.serve)
app.command()(serve.worker)
app.command()(serve.workers)
app.command()(data.validate)
app.command("prepare-data")(data.prepare_data)
app.add_typer(keys.app, name="keys")
app.add_typer(files.app, name="files")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(evals.app, name="evals")
app.command()(chat.chat)
app.command()(chat.complete)


def main() -> None:
    quiet_libraries()
    app()
