"""/tunery: tunery's own endpoints beside OpenAI's API, under the same keys (what the console needs
and the API has no place for)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from tunery.api.deps import ContainerDep, OrgDep
from tunery.api.uploads import receive_upload
from tunery.errors import InvalidRequest
from tunery.protocol.files import FileReport

router = APIRouter(tags=["tunery"])


@router.post("/files/check")
async def check_file(c: ContainerDep, org: OrgDep, request: Request) -> FileReport:
    """multipart/form-data: `model`, optionally `method` (supervised), and a `file` part or the
    `file_id` of an uploaded file. Nothing is stored."""
    writer = c.files.receiver()
    try:
        form = await receive_upload(request, writer, c.files.too_large(),
                                    expected="a 'model' field and a 'file' part or a 'file_id' field")
        if form.filename is not None:
            path = writer.written
        elif form.fields.get("file_id"):
            path = await run_in_threadpool(c.files.content_path, org.id, form.fields["file_id"])
        else:
            raise InvalidRequest("Send the file (a 'file' part) or the file_id of an uploaded file.", param="file")
        # Reading the file with the tokenizer and measuring the training speed take a while.
        return await run_in_threadpool(c.jobs.check_file, org.id, form.fields.get("model"), path,
                                       form.fields.get("method"))
    finally:
        writer.discard()
