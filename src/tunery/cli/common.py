"""What every command shares: settings from options, and the one-line error exit."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from tunery.config import Settings

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="State folder [env TUNERY_DATA_DIR; default ./.tunery]")]


def quiet_libraries() -> None:
    """No progress bars or deprecation chatter from the ML libraries in our output (tunery draws
    its own progress: a job's events, `tunery models pull`'s bar)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def settings(**overrides) -> Settings:
    """The settings from the environment and the options given; a bad one ends the command in one line."""
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        fail(f"TUNERY_{str(error['loc'][0]).upper()}: {error['msg'].removeprefix('Value error, ')}", 2)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)
