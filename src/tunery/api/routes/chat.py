"""/v1/chat/completions: JSON, or server-sent events when stream is true."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tunery.api.deps import ContainerDep, OrgDep
from tunery.api.disconnects import unless_client_leaves
from tunery.api.responses import errors
from tunery.api.sse import event_stream
from tunery.protocol.chat import ChatCompletion, ChatCompletionRequest

router = APIRouter(tags=["chat"])


@router.post("/chat/completions", response_model=None, responses=errors(404))  # an unknown model
async def create(c: ContainerDep, org: OrgDep, body: ChatCompletionRequest,
                 request: Request) -> ChatCompletion | StreamingResponse | Response:
    # Checks, tokenizer and prompt are blocking work: off the event loop that serves every stream.
    run = await run_in_threadpool(c.chat.start_chat, org.id, body)
    if body.stream:
        return event_stream(c.chat.chat_chunks(run))
    return await unless_client_leaves(request, c.chat.chat(run))  # a client gone stops its generation
