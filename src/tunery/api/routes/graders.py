"""/v1/fine_tuning/alpha/graders: run a grader on one sample, or validate one."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from tunery.api.deps import ContainerDep, OrgDep
from tunery.api.disconnects import unless_client_leaves
from tunery.protocol.graders import GraderRunRequest, GraderRunResponse, GraderValidateRequest, GraderValidateResponse

router = APIRouter(tags=["graders"])


@router.post("/fine_tuning/alpha/graders/run", response_model=GraderRunResponse)
async def run(c: ContainerDep, org: OrgDep, body: GraderRunRequest, request: Request) -> GraderRunResponse | Response:
    return await unless_client_leaves(request, c.graders.run(org.id, body))  # a client gone stops its judge


@router.post("/fine_tuning/alpha/graders/validate", response_model_exclude_unset=True)  # the grader as it was sent
async def validate(c: ContainerDep, org: OrgDep, body: GraderValidateRequest) -> GraderValidateResponse:
    return await run_in_threadpool(c.graders.validate, org.id, body)
