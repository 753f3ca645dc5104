"""Server-sent events as OpenAI streams them: `data: {json}` per chunk, then `data: [DONE]`. A
failure mid-stream is sent as an `error` event (the SDK raises it); a client that goes away
cancels the generator, whose cleanup stops the generation."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tunery.errors import TuneryError

log = logging.getLogger(__name__)


def event_stream(chunks: AsyncIterator[BaseModel]) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in chunks:
                yield f"data: {chunk.model_dump_json(exclude_none=False)}\n\n"
        except Exception as exc:  # headers are sent: the failure can only travel as an event
            log.error("stream failed", exc_info=exc)
            error = exc if isinstance(exc, TuneryError) else TuneryError(f"The server had an error while streaming: {exc}")
            yield f"data: {json.dumps(error.envelope())}\n\n"
        finally:
            await chunks.aclose()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

