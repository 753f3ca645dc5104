"""/v1/models"""

from __future__ import annotations

from fastapi import APIRouter

from tunery.api.deps import ContainerDep, OrgDep
from tunery.api.responses import errors
from tunery.protocol.common import ListResponse
from tunery.protocol.models import Model, ModelDeleted

router = APIRouter(tags=["models"])


@router.get("/models")
def list_models(c: ContainerDep, org: OrgDep) -> ListResponse[Model]:
    return ListResponse(data=c.models.list(org.id, org.name))


@router.get("/models/{model_id:path}", responses=errors(404))  # hub ids hold a slash: Qwen/Qwen2.5-0.5B-Instruct
def retrieve(c: ContainerDep, org: OrgDep, model_id: str) -> Model:
    return c.models.retrieve(org.id, org.name, model_id)


@router.delete("/models/{model_id:path}", responses=errors(403, 404))
def delete(c: ContainerDep, org: OrgDep, model_id: str) -> ModelDeleted:
    return c.models.delete(org.id, model_id)
