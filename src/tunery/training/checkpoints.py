"""Checkpoint folders: weights (a LoRA adapter or a full model), the tokenizer, the resolved
config and metrics, and the trainer state to resume from: one file, and for a sharded run
(sharded.py) the optimizer's state in torch.distributed.checkpoint's format beside it, one file
per process. The manifest is written last, so a folder without one is incomplete (a crash
mid-write) and is never loaded."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

MANIFEST = "tunery_checkpoint.json"
TRAINER_STATE = "trainer_state.pt"  # optimizer, scheduler, step and RNG state, for resuming
TRAINER_SHARDS = "trainer_state_shards"  # a sharded run's optimizer state, each process's part


def write_manifest(folder: Path, **fields: Any) -> None:
    # The trainer state is left out: older checkpoints drop it once a newer one exists.
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and p.name != TRAINER_STATE and p.relative_to(folder).parts[0] != TRAINER_SHARDS)
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


def drop_trainer_state(folder: Path) -> None:
    """What only resuming needs goes (a checkpoint older than the newest stays a model)."""
    (folder / TRAINER_STATE).unlink(missing_ok=True)
    shutil.rmtree(folder / TRAINER_SHARDS, ignore_errors=True)


def save_optimizer_shards(model, optimizer, folder: Path) -> None:
    """The optimizer's state by parameter name, each process writing its part (a collective
    when a process group is up: every process calls it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(folder))


def load_optimizer_shards(model, optimizer, folder: Path) -> None:
    """The optimizer's state from save_optimizer_shards' folder, whatever the number of processes
    that wrote it and that read it (one without a process group reads every part)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}  # the shapes to read into
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, checkpoint_id=str(folder), no_dist=not dist.is_initialized())
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
