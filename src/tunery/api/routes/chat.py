"""/v1/chat/completions"""

from __future__ import annotations

from fastapi import APIRouter

from tunery.api.deps import ContainerDep, OrgDep
from tunery.protocol.chat import ChatCompletion, ChatCompletionRequest

router = APIRouter(tags=["chat"])


@router.post("/chat/completions")
def create(c: ContainerDep, org: OrgDep, body: ChatCompletionRequest) -> ChatCompletion:
    return c.chat.complete(org.id, body)
