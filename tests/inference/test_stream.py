"""A Stream whose asyncio reader's loop has closed (a cancelled eval batch's): the engine thread's
later events are dropped without raising (a RuntimeError there would end the engine thread), and
the stream reads as cancelled, so that its generation stops."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tunery.inference.types import Delta, Stream


def test_events_for_a_reader_whose_loop_closed_are_dropped_and_stop_generation():
    stream = Stream(1)

    async def read_then_give_up():
        reading = asyncio.ensure_future(stream.__aiter__().__anext__())
        await asyncio.sleep(0)  # the reader is bound to this loop now
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading

    # its own thread: the console tests' Playwright (sync API) keeps an event loop running in this
    # thread for the rest of the session, and asyncio.run refuses to start beside a running loop
    reader = threading.Thread(target=asyncio.run, args=(read_then_give_up(),))
    reader.start()
    reader.join()
    stream.put(Delta(0, "late"))
    stream.put(None)
    assert stream.cancelled
