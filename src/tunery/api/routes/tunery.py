"""/tunery: tunery's own endpoints beside OpenAI's API, under the same keys (what the console needs
and the API has no place for)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from fastapi.concurrency import run_in_threadpool

from tunery.api.deps import ContainerDep, OrgDep
from tunery.api.responses import ZIP, errors, multipart
from tunery.api.uploads import receive_upload
from tunery.errors import InvalidRequest
from tunery.protocol.files import FileCheckForm, FileReport

router = APIRouter(tags=["tunery"])


@router.post("/files/check", responses=errors(400, 404, 413, 429), openapi_extra=multipart(FileCheckForm))
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


@router.get("/models/{model_id:path}/export", response_class=FileResponse, responses={200: ZIP} | errors(404))
def export_model(c: ContainerDep, org: OrgDep, model_id: str, format: str = "hf") -> FileResponse:
    """A fine-tuned model or checkpoint of the caller's organization as a zip: `format` hf (merged
    weights), adapter (PEFT LoRA) or gguf (with an Ollama Modelfile)."""
    path = c.models.export(org.id, model_id, format)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("_")
    return FileResponse(path, media_type="application/zip", filename=f"{name}-{format}.zip")
