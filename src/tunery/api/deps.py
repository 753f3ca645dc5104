"""Request-scoped dependencies: the service container and the caller's organization."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from tunery.services.container import Container
from tunery.storage.tables import Organization


async def get_container(request: Request) -> Container:  # async: a sync dependency costs a thread hop
    return request.app.state.container


async def current_org(request: Request, container: Annotated[Container, Depends(get_container)]) -> Organization:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else None
    organizations = container.organizations
    # A key known without the database is answered here; any other is looked up in a thread.
    return organizations.known(key) or await run_in_threadpool(organizations.authenticate, key)


ContainerDep = Annotated[Container, Depends(get_container)]
OrgDep = Annotated[Organization, Depends(current_org)]
