"""Files: upload (streamed to a blob, training files validated before anything is kept), list,
retrieve, content, delete."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tunery.data.validate import validate_file
from tunery.errors import InvalidRequest, NotFound, TooLarge
from tunery.ids import new_id, now
from tunery.protocol.files import FileDeleted, FileObject
from tunery.storage.blobs import BlobStore, BlobTooLarge
from tunery.storage.files import FilesRepo
from tunery.storage.tables import File

MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # one uploaded file
MAX_REPORTED_PROBLEMS = 5  # in the message of a refused training file
PURPOSES = {"fine-tune", "fine-tune-results", "assistants", "batch", "vision", "user_data"}
UPLOADABLE_PURPOSES = PURPOSES - {"fine-tune-results"}


def to_object(row: File) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename,
                      purpose=row.purpose, status=row.status)


class FilesService:
    def __init__(self, repo: FilesRepo, blobs: BlobStore):
        self.repo = repo
        self.blobs = blobs

    def create(self, org_id: str, filename: str, purpose: str, chunks: Iterable[bytes]) -> FileObject:
        if purpose not in UPLOADABLE_PURPOSES:
            raise InvalidRequest(f"Invalid purpose {purpose!r}; expected one of {sorted(UPLOADABLE_PURPOSES)}.",
                                 param="purpose")
        if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
            raise InvalidRequest("Files for fine-tuning must be JSONL (.jsonl).", param="file")
        file_id = new_id("file")
        try:
            size = self.blobs.write_file(file_id, chunks, max_bytes=MAX_UPLOAD_BYTES)
        except BlobTooLarge:
            raise TooLarge(f"File is larger than the limit of {MAX_UPLOAD_BYTES} bytes.", param="file") from None
        if purpose == "fine-tune":
            report = validate_file(self.blobs.file_path(file_id))
            if not report.ok:
                self.blobs.delete_file(file_id)
                shown = "; ".join(str(p) for p in report.errors[:MAX_REPORTED_PROBLEMS])
                more = len(report.errors) - MAX_REPORTED_PROBLEMS
                raise InvalidRequest(f"Invalid file format for fine-tuning: {shown}" + (f" (and {more} more)" if more > 0 else ""),
                                     param="file", code="invalid_file_format")
        row = File(id=file_id, organization_id=org_id, filename=Path(filename).name, purpose=purpose,
                   bytes=size, created_at=now(), status="processed")
        try:
            self.repo.add(row)
        except BaseException:
            self.blobs.delete_file(file_id)
            raise
        return to_object(row)

    def retrieve(self, org_id: str, file_id: str) -> FileObject:
        return to_object(self._row(org_id, file_id))

    def list(self, org_id: str, *, purpose: str | None, limit: int, after: str | None, order: str) -> tuple[list[FileObject], bool]:
        rows = self.repo.list(org_id, purpose=purpose, limit=limit + 1, after=after, order=order)
        return [to_object(r) for r in rows[:limit]], len(rows) > limit

    def content_path(self, org_id: str, file_id: str) -> Path:
        self._row(org_id, file_id)
        return self.blobs.file_path(file_id)

    def delete(self, org_id: str, file_id: str) -> FileDeleted:
        self._row(org_id, file_id)
        self.repo.delete(file_id)
        self.blobs.delete_file(file_id)
        return FileDeleted(id=file_id, deleted=True)

    def _row(self, org_id: str, file_id: str) -> File:
        row = self.repo.get(org_id, file_id)
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return row
