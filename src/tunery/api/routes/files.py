"""/v1/files"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from tunery.api.deps import ContainerDep, OrgDep
from tunery.protocol.common import ListResponse
from tunery.protocol.files import FileDeleted, FileObject

router = APIRouter(tags=["files"])
UPLOAD_CHUNK_BYTES = 1024 * 1024
MAX_FILES_PAGE = 10_000


@router.post("/files")
def upload(c: ContainerDep, org: OrgDep, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]) -> FileObject:
    chunks = iter(lambda: file.file.read(UPLOAD_CHUNK_BYTES), b"")
    return c.files.create(org.id, file.filename or "upload", purpose, chunks)


@router.get("/files")
def list_files(c: ContainerDep, org: OrgDep, purpose: str | None = None,
               limit: Annotated[int, Query(ge=1, le=MAX_FILES_PAGE)] = MAX_FILES_PAGE,
               after: str | None = None, order: Literal["asc", "desc"] = "desc") -> ListResponse[FileObject]:
    data, has_more = c.files.list(org.id, purpose=purpose, limit=limit, after=after, order=order)
    return ListResponse(data=data, has_more=has_more)


@router.get("/files/{file_id}")
def retrieve(c: ContainerDep, org: OrgDep, file_id: str) -> FileObject:
    return c.files.retrieve(org.id, file_id)


@router.get("/files/{file_id}/content")
def content(c: ContainerDep, org: OrgDep, file_id: str) -> FileResponse:
    return FileResponse(c.files.content_path(org.id, file_id), media_type="application/octet-stream")


@router.delete("/files/{file_id}")
def delete(c: ContainerDep, org: OrgDep, file_id: str) -> FileDeleted:
    return c.files.delete(org.id, file_id)
