"""Request-scoped dependencies: the service container and the caller's organization."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from tunery.services.container import Container
from tunery.storage.tables import Organization


def get_container(request: Request) -> Container:
    return request.app.state.container


def current_org(request: Request, container: Annotated[Container, Depends(get_container)]) -> Organization:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    return container.organizations.authenticate(key.strip() if scheme.lower() == "bearer" else None)


ContainerDep = Annotated[Container, Depends(get_container)]
OrgDep = Annotated[Organization, Depends(current_org)]
