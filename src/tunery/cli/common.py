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
    """No progress bars or deprecation chatter from the ML libraries in our output, and no
    attempt to reach a model hub: every model tunery loads is a local folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


def settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)
