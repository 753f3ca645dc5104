"""Blobs on disk under the data directory: uploaded files, fine-tuned model artefacts and the
converted base models. Every write lands in a temporary path first and is renamed into place,
so a reader never sees half a blob."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        for folder in ("files", "models", "checkpoints", "base_models", "exports", "tmp"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    # uploaded files --------------------------------------------------------------------------
    def file_path(self, file_id: str) -> Path:
        return self.root / "files" / file_id

    def file_writer(self, max_bytes: int | None = None) -> BlobWriter:
        """A new blob, written piece by piece, kept under a file id by commit(), else discarded."""
        return BlobWriter(self, max_bytes)

    def write_file(self, file_id: str, chunks: Iterable[bytes], *, max_bytes: int | None = None) -> int:
        """Stream chunks to the file's blob; returns its size. Raises BlobTooLarge (and keeps
        nothing) once more than max_bytes arrive."""
        writer = self.file_writer(max_bytes)
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit(file_id)
        except BaseException:
            writer.discard()
            raise

    def delete_file(self, file_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.file_path(file_id).unlink()

    # fine-tuned models -----------------------------------------------------------------------
    def model_dir(self, job_id: str) -> Path:
        """Artefacts of the model a job produced (adapter or full weights, tokenizer, config)."""
        return self.root / "models" / job_id

    def checkpoint_dir(self, job_id: str, step: int) -> Path:
        return self.root / "checkpoints" / job_id / f"step-{step}"

    def export_path(self, job_id: str, model: str, fmt: str) -> Path:
        """The zip of a job's model (or one of its checkpoints, `model` naming which) in a format."""
        return self.root / "exports" / job_id / f"{model}-{fmt}.zip"

    def integration_dir(self, name: str) -> Path:
        """Where an integration keeps its local files (W&B runs, offline ones included)."""
        return self.root / name

    def delete_dir(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def delete_job_artefacts(self, job_id: str) -> None:
        """A job's model and checkpoints (a cancelled or deleted job's)."""
        self.delete_dir(self.model_dir(job_id))
        self.delete_dir(self.root / "checkpoints" / job_id)
        self.delete_dir(self.root / "exports" / job_id)

    def link_copy(self, source: Path, target: Path, *, skip: tuple[str, ...] = ()) -> None:
        """Publish a copy of a folder whose files are hard links where the disk allows: a final
        model costs no space beside the checkpoint it is. skip: names of files or folders in
        `source` left out."""
        with self.staging_dir() as staged:
            for path in source.rglob("*"):
                if path.is_file() and path.relative_to(source).parts[0] not in skip:
                    destination = staged / path.relative_to(source)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(path, destination)
                    except OSError:
                        shutil.copy2(path, destination)
            self.publish_dir(staged, target)

    def publish_file(self, staged: Path, final: Path) -> None:
        """Atomically move a complete staged file to its final place."""
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, final)

    @contextlib.contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A fresh folder for writing artefacts that will be published with publish_dir()."""
        path = Path(tempfile.mkdtemp(dir=self.root / "tmp"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish_dir(self, staged: Path, final: Path) -> None:
        """Atomically move a complete staged folder to its final place."""
        final.parent.mkdir(parents=True, exist_ok=True)
        _fsync_tree(staged)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)

    # secrets ---------------------------------------------------------------------------------
    def read_secret(self, name: str) -> str | None:
        path = self.root / f"{name}.secret"
        return path.read_text().strip() if path.exists() else None

    def write_secret(self, name: str, value: str) -> None:
        """Written readable by the owner alone (mode 0600)."""
        path = self.root / f"{name}.secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")

    # base models -----------------------------------------------------------------------------
    def base_model_dir(self, name: str) -> Path:
        return self.root / "base_models" / name

    def gguf_dir(self) -> Path:
        """Where CPU serving keeps the GGUF conversions of base models and adapters (llama.cpp)."""
        return self.root / "gguf"

    def base_model_names(self) -> list[str]:
        folder = self.root / "base_models"
        return sorted(p.name for p in folder.iterdir() if (p / "config.json").exists())

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A lock shared across processes (the API and the worker both convert base models)."""
        with open(self.root / "tmp" / f"{name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class BlobWriter:
    """A blob being received: bytes go to a temporary file; past max_bytes the write raises
    BlobTooLarge and the file is gone, so an oversized upload is neither held nor kept."""

    def __init__(self, store: BlobStore, max_bytes: int | None):
        self.store = store
        self.max_bytes = max_bytes
        self.size = 0
        fd, self.path = tempfile.mkstemp(dir=store.root / "tmp")
        self.handle = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            self.discard()
            raise BlobTooLarge(self.max_bytes)
        self.handle.write(chunk)

    @property
    def written(self) -> Path:
        """The bytes so far, readable (flushed) before commit."""
        self.handle.flush()
        return Path(self.path)

    def commit(self, file_id: str) -> int:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.path, self.store.file_path(file_id))
        return self.size

    def discard(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class BlobTooLarge(Exception):
    def __init__(self, max_bytes: int):
        super().__init__(f"more than {max_bytes} bytes")
        self.max_bytes = max_bytes


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
