"""Checkpoint folders: weights (a LoRA adapter or a full model), the tokenizer, the resolved
config and metrics, and the trainer state to resume from. The manifest is written last, so a
folder without one is incomplete (a crash mid-write) and is never loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MANIFEST = "tunery_checkpoint.json"
TRAINER_STATE = "trainer_state.pt"  # optimizer, scheduler, step and RNG state, for resuming


def write_manifest(folder: Path, **fields: Any) -> None:
    # The trainer state is left out: older checkpoints drop it once a newer one exists.
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != TRAINER_STATE)
    path = folder / MANIFEST
    with open(path, "w") as handle:
        json.dump({**fields, "files": files}, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a complete checkpoint; ValueError for an incomplete or damaged one."""
    path = folder / MANIFEST
    if not path.exists():
        raise ValueError(f"{folder} is not a complete checkpoint (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    missing = [f for f in manifest["files"] if not (folder / f).exists()]
    if missing:
        raise ValueError(f"{folder} is missing {missing}")
    return manifest

