"""The FastAPI application: routes under /v1, every failure in OpenAI's error envelope; its
lifespan stops the generation engine promptly when the server stops."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunery import __version__
from tunery import console
from tunery.api.responses import errors, openapi_document
from tunery.api.routes import chat, completions, evals, files, fine_tuning, graders, models, tunery
from tunery.config import Settings
from tunery.errors import InvalidRequest, TooLarge, TuneryError
from tunery.services.container import Container

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    # No /docs or /redoc pages: FastAPI builds them from a CDN's scripts, which neither the
    # Content-Security-Policy nor an offline machine allows; /openapi.json describes the API.
    app = FastAPI(title="tunery", version=__version__, description="The OpenAI fine-tuning API, self-hosted.",
                  docs_url=None, redoc_url=None, lifespan=_lifespan)
    app.state.container = Container(settings)
    for module in (files, fine_tuning, graders, evals, models, chat, completions):  # every operation needs a key and may fault
        app.include_router(module.router, prefix="/v1", responses=errors(401, 500))
    app.include_router(tunery.router, prefix="/tunery", responses=errors(401, 500))
    app.openapi = openapi_document(app)
    console.mount(app)

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok"}

    app.add_exception_handler(TuneryError, _tunery_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(BodyLimit)
    app.add_middleware(FaultBarrier)
    app.add_middleware(SecurityHeaders)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    container = app.state.container
    _stop_generation_on_signals(container)
    # What was made to start (torch, transformers, the app: some 300,000 objects) lives as long as
    # the process: out of the collector's sight, a full collection no longer walks it (130 ms, every
    # request in the process stopped meanwhile, on this 2-core machine: the p99 of bench/load.py).
    gc.freeze()
    threading.Thread(target=_preload_first_chat, name="tunery-preload", daemon=True).start()
    yield
    engine = _engine(container)
    if engine is not None:
        await asyncio.to_thread(engine.close)  # what is still in flight ends; the engine thread with it


def _preload_first_chat() -> None:
    """What the first chat imports, imported in the background (its 5 s were the first chat's wait),
    then put out of the collector's sight as what was made to start is (above)."""
    from tunery.inference import preload

    preload()
    gc.freeze()


def _engine(container: Container):
    """The generation engine, if chat was ever used (it is made then: Container.chat is a cached property)."""
    chat = vars(container).get("chat")
    return chat.engine if chat is not None else None


def _stop_generation_on_signals(container: Container) -> None:
    """uvicorn runs the lifespan's shutdown only once the requests in flight have ended, and a
    generation may run for minutes: so SIGINT and SIGTERM stop the engine first (what is in flight
    answers an error at once), then go on to the handlers uvicorn installed. Only the main thread
    receives signals: a server run in another thread (tests) is stopped by its lifespan alone."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(number)

        def stop_generation(signum, frame, previous=previous) -> None:
            engine = _engine(container)
            if engine is not None:
                engine.stop()  # returns at once: a signal handler must not wait
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        signal.signal(number, stop_generation)


def _tunery_error(_request: Request, exc: TuneryError) -> JSONResponse:
    return JSONResponse(exc.envelope(), status_code=exc.status_code)


def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if errors[0].get("type") == "json_invalid":  # its location is a character offset, no parameter
        return _tunery_error(_request, InvalidRequest(
            f"We could not parse the JSON body of your request ({errors[0].get('msg')}).", param=None))
    param = _param(errors[0]) or None
    # A union's members each fail apart ("Input should be 'auto'", "... a valid integer"): said together.
    said = list(dict.fromkeys(str(e.get("msg")) for e in errors if (_param(e) or None) == param))
    message = f"Invalid value for '{param}': {'; or '.join(said)}" if param else "; ".join(said)
    return _tunery_error(_request, InvalidRequest(message, param=param))


def _param(error: dict) -> str:
    """The parameter's dotted name, without the parts pydantic adds for a union's members
    ("literal['auto']", "int", a model's class name)."""
    parts = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
    return ".".join(p for p in parts if not (p in PYDANTIC_TYPE_TAGS or "[" in p or p[:1].isupper()))


PYDANTIC_TYPE_TAGS = {"int", "float", "str", "bool", "none", "bytes"}


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if request.scope.get("state", {}).get("body_too_large"):
        return _body_too_large()
    error = TuneryError(str(exc.detail))
    error.status_code, error.error_type = exc.status_code, "invalid_request_error"
    return JSONResponse(error.envelope(), status_code=exc.status_code)


MAX_BODY_BYTES = 16 << 20  # any request body but a multipart upload (bounded by TUNERY_MAX_UPLOAD_BYTES)


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """A request body (JSON) is refused with 413 once it passes MAX_BODY_BYTES: before reading
    when Content-Length says so, else the moment the bytes received pass it. Multipart uploads
    stream to disk under their own limit (api/uploads.py)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ())) if scope["type"] == "http" else {}
        if scope["type"] != "http" or headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            await self.app(scope, receive, send)
            return
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await self._refuse(scope, receive, send)
            return
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    # FastAPI turns a failure while it reads a body into a 400: _http_error looks here.
                    scope.setdefault("state", {})["body_too_large"] = True
                    raise _BodyTooLarge
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, send_tracked)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await _body_too_large()(scope, receive, send)


def _body_too_large() -> JSONResponse:
    return JSONResponse(TooLarge(f"The request body is larger than the limit of {MAX_BODY_BYTES} bytes.").envelope(),
                        status_code=413)


class SecurityHeaders:
    """Headers on every response that keep the console's pages to their own scripts: only files
    of this server run (no inline script, no eval, nothing from elsewhere), no form is ever sent
    (the key stays in the page), no other site may frame it, no response is sniffed as another type."""

    HEADERS = [
        (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                                     b"connect-src 'self'; font-src 'self'; form-action 'none'; frame-ancestors 'none'; "
                                     b"base-uri 'none'"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
    ]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class FaultBarrier:
    """A fault of ours (any other exception) answers 500 in the envelope, naming a request id
    that the log line with its traceback also carries. A pure ASGI middleware, not an exception
    handler: Starlette re-raises after those, and the server then drops the connection."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            request_id = f"req_{uuid.uuid4().hex}"
            log.error("request %s %s %s failed", request_id, scope["method"], scope["path"], exc_info=exc)
            if started:  # too late for an error response: the client sees the connection end
                raise
            error = TuneryError(f"The server had an error while processing your request (request id {request_id}).")
            await JSONResponse(error.envelope(), status_code=500, headers={"x-request-id": request_id})(scope, receive, send)
