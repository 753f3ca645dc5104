"""The FastAPI application: routes under /v1, every failure in OpenAI's error envelope."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunery import __version__
from tunery.api.routes import chat, completions, files, fine_tuning, models
from tunery.config import Settings
from tunery.errors import InvalidRequest, TuneryError
from tunery.services.container import Container

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(title="tunery", version=__version__, description="The OpenAI fine-tuning API, self-hosted.")
    app.state.container = Container(settings)
    for module in (files, fine_tuning, models, chat, completions):
        app.include_router(module.router, prefix="/v1")

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok"}

    app.add_exception_handler(TuneryError, _tunery_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    return app


def _tunery_error(_request: Request, exc: TuneryError) -> JSONResponse:
    return JSONResponse(exc.envelope(), status_code=exc.status_code)


def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    message = f"Invalid value for '{param}': {first.get('msg')}" if param else str(first.get("msg"))
    return _tunery_error(_request, InvalidRequest(message, param=param))


def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    error = TuneryError(str(exc.detail))
    error.status_code, error.error_type = exc.status_code, "invalid_request_error"
    return JSONResponse(error.envelope(), status_code=exc.status_code)


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = f"req_{uuid.uuid4().hex}"
    log.exception("request %s %s %s failed", request_id, request.method, request.url.path)
    error = TuneryError(f"The server had an error while processing your request (request id {request_id}).")
    return JSONResponse(error.envelope(), status_code=500, headers={"x-request-id": request_id})
