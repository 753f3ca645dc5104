"""Files: upload (streamed to a blob, training files validated before anything is kept), list,
retrieve, content, delete; and the files the server writes itself (jobs' result files)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import get_args

from tunery.config import MAX_UPLOAD_BYTES
from tunery.data.validate import validate_file
from tunery.errors import InvalidRequest, NotFound, TooLarge, unknown_cursor
from tunery.ids import new_id, now
from tunery.protocol.files import FileDeleted, FileObject, UploadPurpose
from tunery.storage.blobs import BlobStore, BlobTooLarge, BlobWriter
from tunery.storage.files import FilesRepo
from tunery.storage.tables import File

MAX_REPORTED_PROBLEMS = 5  # in the message of a refused training file
UPLOADABLE_PURPOSES = set(get_args(UploadPurpose))


def to_object(row: File) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename,
                      purpose=row.purpose, status=row.status)


class FilesService:
    def __init__(self, repo: FilesRepo, blobs: BlobStore, max_upload_bytes: int = MAX_UPLOAD_BYTES):
        self.repo = repo
        self.blobs = blobs
        self.max_upload_bytes = max_upload_bytes

    def create(self, org_id: str, filename: str, purpose: str, chunks: Iterable[bytes]) -> FileObject:
        writer = self.receiver()
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BlobTooLarge:
            raise self.too_large() from None
        return self.create_received(org_id, filename, purpose, writer)

    def receiver(self) -> BlobWriter:
        """Where an upload's bytes go as they arrive (at most max_upload_bytes)."""
        return self.blobs.file_writer(self.max_upload_bytes)

    def create_received(self, org_id: str, filename: str | None, purpose: str | None, writer: BlobWriter) -> FileObject:
        """Check a received upload and keep it as a file; nothing is kept when it is refused."""
        try:
            return self._keep(org_id, filename, purpose, writer)
        finally:
            writer.discard()  # a no-op once committed

    def _keep(self, org_id: str, filename: str | None, purpose: str | None, writer: BlobWriter) -> FileObject:
        if filename is None:
            raise InvalidRequest("The request has no file part.", param="file")
        if purpose not in UPLOADABLE_PURPOSES:
            raise InvalidRequest(f"Invalid purpose {purpose!r}; expected one of {sorted(UPLOADABLE_PURPOSES)}.",
                                 param="purpose")
        if purpose == "fine-tune" and not filename.lower().endswith(".jsonl"):
            raise InvalidRequest("Files for fine-tuning must be JSONL (.jsonl).", param="file")
        if purpose == "fine-tune":
            report = validate_file(writer.written)
            if not report.ok:
                shown = "; ".join(str(p) for p in report.errors[:MAX_REPORTED_PROBLEMS])
                more = report.error_count - MAX_REPORTED_PROBLEMS
                raise InvalidRequest(f"Invalid file format for fine-tuning: {shown}" + (f" (and {more} more)" if more > 0 else ""),
                                     param="file", code="invalid_file_format")
        return self._commit(org_id, filename, purpose, writer)

    def store(self, org_id: str, filename: str, purpose: str, content: bytes) -> FileObject:
        """A file the server writes itself (a job's result file), kept like any upload."""
        writer = self.blobs.file_writer()
        try:
            writer.write(content)
            return self._commit(org_id, filename, purpose, writer)
        finally:
            writer.discard()  # a no-op once committed

    def _commit(self, org_id: str, filename: str, purpose: str, writer: BlobWriter) -> FileObject:
        file_id = new_id("file")
        row = File(id=file_id, organization_id=org_id, filename=Path(filename).name, purpose=purpose,
                   bytes=writer.commit(file_id), created_at=now(), status="processed")
        try:
            self.repo.add(row)
        except BaseException:
            self.blobs.delete_file(file_id)
            raise
        return to_object(row)

    def too_large(self) -> TooLarge:
        return TooLarge(f"File is larger than the limit of {self.max_upload_bytes} bytes.", param="file")

    def retrieve(self, org_id: str, file_id: str) -> FileObject:
        return to_object(self._row(org_id, file_id))

    def list(self, org_id: str, *, purpose: str | None, limit: int, after: str | None, order: str) -> tuple[list[FileObject], bool]:
        if after is not None and self.repo.get(org_id, after) is None:
            raise unknown_cursor("File", after)
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
