"""The web console: a small static app (HTML, CSS and JavaScript modules, no build step) served by
`tunery serve` at / on the API's own port. It signs in with an organization's API key and calls
the public /v1 API (and tunery's /tunery endpoints) with it, so it can do nothing the API would
refuse. Its scripts and chart library are files of this package: nothing is fetched at run time."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
STATIC_PREFIX = "/console/static"


def mount(app: FastAPI) -> None:
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC), name="console")

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
