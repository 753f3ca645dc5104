"""/v1/completions (legacy)"""

from __future__ import annotations

from fastapi import APIRouter

from tunery.api.deps import ContainerDep, OrgDep
from tunery.protocol.completions import Completion, CompletionRequest

router = APIRouter(tags=["completions"])


@router.post("/completions")
def create(c: ContainerDep, org: OrgDep, body: CompletionRequest) -> Completion:
    return c.chat.complete_text(org.id, body)
