"""Work for a client that has gone stops: a non-streamed answer is awaited together with the
client's disconnect, and cancelled when the client leaves first (the answer's cleanup closes its
engine stream, so its sequences leave the engine at the next step). A streamed answer needs none
of this: Starlette cancels a StreamingResponse's generator when its client goes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request, Response

log = logging.getLogger(__name__)
CLIENT_CLOSED_REQUEST = 499  # what is answered to nobody (nginx's status for a client gone before its answer)
T = TypeVar("T")


async def unless_client_leaves(request: Request, answer: Awaitable[T]) -> T | Response:
    """answer's result, or, once the client has disconnected, answer cancelled and a 499 nobody reads."""
    answering = asyncio.ensure_future(answer)
    leaving = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({answering, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        leaving.cancel()
        if not answering.done():
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
    if not answering.cancelled():
        return answering.result()
    log.info("%s %s: the client went away before its answer; its generation stopped", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (its body was read: the server's next message says so)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
