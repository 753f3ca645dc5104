"""What callers exchange with the engine, without torch (the API process imports these long
before it needs the engine): sampling parameters in; Delta and Finished events out through a
Stream, read synchronously or with asyncio; and the refusals raised before anything runs."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any


class UnsupportedModel(ValueError):
    """The serving engine does not run this architecture."""


class RequestTooLarge(ValueError):
    """One request asks more of the engine (which every organization shares) than one may; the
    message says what, and `param` which parameter to lower."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # None: none; N: the chosen token's and the N likeliest
    prompt_logprobs: bool = False  # legacy echo with logprobs: the prompt's tokens too


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]]  # (token, logprob, bytes), likeliest first


@dataclass
class Delta:
    """New text of sequence `index`, and the tokens that made it (with their logprobs if asked)."""
    index: int
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Finished:
    index: int
    finish_reason: str  # "stop" | "length"
    text: str  # the whole completion, stop sequence excluded
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] = field(default_factory=list)  # echo: None for the first


class ContextLengthExceeded(ValueError):
    def __init__(self, prompt_tokens: int, max_tokens: int, context: int, by_kv_cache: bool = False):
        """by_kv_cache: the context served is shorter than the model's, bounded by the KV cache."""
        bound = (f" (This server's KV cache, TUNERY_KV_CACHE_MB, holds at most {context} tokens of one completion "
                 f"of this model.)") if by_kv_cache else ""
        super().__init__(f"This model's maximum context length is {context} tokens. However, you requested "
                         f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} "
                         f"in the completion). Please reduce the length of the messages or completion.{bound}")


class EngineClosed(RuntimeError):
    """The engine stopped (the server is shutting down): generation in flight ends with this."""

    def __init__(self):
        super().__init__("The server is shutting down: this generation was stopped. Please try again.")


class Stream:
    """What the engine sends back for one submission: Delta and Finished events for each of its
    sequences, then None. Iterate it (blocking) or `async for` it; close() stops generation."""

    def __init__(self, size: int):
        self.size = size  # its sequences
        self.remaining = size  # not finished yet (the engine thread counts down)
        self.cancelled = False
        self._sync: queue.Queue = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async: asyncio.Queue | None = None
        self._lock = threading.Lock()

    def put(self, event: Any) -> None:
        with self._lock:
            if self._loop is None:
                self._sync.put(event)
            elif not self._loop.is_closed():
                try:
                    self._loop.call_soon_threadsafe(self._async.put_nowait, event)
                except RuntimeError:  # closed since: nobody reads this stream any more
                    self.cancelled = True
            else:  # its reader's loop is gone: nobody reads it any more, generation stops
                self.cancelled = True

    def close(self) -> None:
        self.cancelled = True

    def __iter__(self) -> Iterator[Any]:
        while (event := self._sync.get()) is not None:
            if isinstance(event, BaseException):
                raise event
            yield event

    async def __aiter__(self) -> AsyncIterator[Any]:
        with self._lock:
            self._loop, self._async = asyncio.get_running_loop(), asyncio.Queue()
            while not self._sync.empty():  # what arrived before the first await
                self._async.put_nowait(self._sync.get_nowait())
        while (event := await self._async.get()) is not None:
            if isinstance(event, BaseException):
                raise event
            yield event

    def collect(self) -> list[Finished]:
        """Block until every sequence has finished; their Finished events by index."""
        return sorted((e for e in self if isinstance(e, Finished)), key=lambda e: e.index)
