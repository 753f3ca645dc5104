"""/v1/files"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from tunery.api.deps import ContainerDep, OrgDep
from tunery.api.responses import BINARY, errors, multipart
from tunery.api.uploads import receive_upload
from tunery.protocol.common import ListResponse
from tunery.protocol.files import FileDeleted, FileObject, FileUpload

router = APIRouter(tags=["files"])
MAX_FILES_PAGE = 10_000


@router.post("/files", responses=errors(400, 413), openapi_extra=multipart(FileUpload))
async def upload(c: ContainerDep, org: OrgDep, request: Request) -> FileObject:
    writer = c.files.receiver()
    try:
        form = await receive_upload(request, writer, c.files.too_large())
    except BaseException:
        writer.discard()
        raise
    # Validating a large training file takes a while: off the event loop.
    return await run_in_threadpool(c.files.create_received, org.id, form.filename, form.fields.get("purpose"), writer)


@router.get("/files")
def list_files(c: ContainerDep, org: OrgDep, purpose: str | None = None,
               limit: Annotated[int, Query(ge=1, le=MAX_FILES_PAGE)] = MAX_FILES_PAGE,
               after: str | None = None, order: Literal["asc", "desc"] = "desc") -> ListResponse[FileObject]:
    data, has_more = c.files.list(org.id, purpose=purpose, limit=limit, after=after, order=order)
    return ListResponse(data=data, has_more=has_more)


@router.get("/files/{file_id}", responses=errors(404))
def retrieve(c: ContainerDep, org: OrgDep, file_id: str) -> FileObject:
    return c.files.retrieve(org.id, file_id)


@router.get("/files/{file_id}/content", response_class=FileResponse, responses={200: BINARY} | errors(404))
def content(c: ContainerDep, org: OrgDep, file_id: str) -> FileResponse:
    return FileResponse(c.files.content_path(org.id, file_id), media_type="application/octet-stream")


@router.delete("/files/{file_id}", responses=errors(404))
def delete(c: ContainerDep, org: OrgDep, file_id: str) -> FileDeleted:
    return c.files.delete(org.id, file_id)
