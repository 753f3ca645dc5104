"""/v1/fine_tuning/jobs"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from tunery.api.deps import ContainerDep, OrgDep
from tunery.api.responses import errors
from tunery.protocol.common import ListResponse
from tunery.protocol.fine_tuning import (
    CreateJobRequest,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    JobStatus,
)

router = APIRouter(tags=["fine-tuning"])
MAX_PAGE = 100
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


@router.post("/fine_tuning/jobs", responses=errors(404, 429))
def create(c: ContainerDep, org: OrgDep, body: CreateJobRequest) -> FineTuningJob:
    return c.jobs.create(org.id, body)


@router.get("/fine_tuning/jobs")
def list_jobs(c: ContainerDep, org: OrgDep, request: Request, limit: Limit = 20, after: str | None = None,
              status: JobStatus | None = None) -> ListResponse[FineTuningJob]:
    """`status` is tunery's extension: only the jobs in that status."""
    # The SDK sends the metadata filter as metadata[key]=value query parameters.
    metadata = {k[len("metadata["):-1]: v for k, v in request.query_params.items()
                if k.startswith("metadata[") and k.endswith("]")}
    data, has_more = c.jobs.list(org.id, limit=limit, after=after, metadata=metadata or None, status=status)
    return ListResponse(data=data, has_more=has_more)


@router.get("/fine_tuning/jobs/{job_id}", responses=errors(404))
def retrieve(c: ContainerDep, org: OrgDep, job_id: str) -> FineTuningJob:
    return c.jobs.retrieve(org.id, job_id)


@router.post("/fine_tuning/jobs/{job_id}/cancel", responses=errors(404, 409))
def cancel(c: ContainerDep, org: OrgDep, job_id: str) -> FineTuningJob:
    return c.jobs.cancel(org.id, job_id)


@router.post("/fine_tuning/jobs/{job_id}/pause", responses=errors(404, 409))
def pause(c: ContainerDep, org: OrgDep, job_id: str) -> FineTuningJob:
    return c.jobs.pause(org.id, job_id)


@router.post("/fine_tuning/jobs/{job_id}/resume", responses=errors(404, 409))
def resume(c: ContainerDep, org: OrgDep, job_id: str) -> FineTuningJob:
    return c.jobs.resume(org.id, job_id)


@router.get("/fine_tuning/jobs/{job_id}/events", responses=errors(404))
def events(c: ContainerDep, org: OrgDep, job_id: str, limit: Limit = 20,
           after: str | None = None) -> ListResponse[FineTuningJobEvent]:
    data, has_more = c.jobs.events(org.id, job_id, limit=limit, after=after)
    return ListResponse(data=data, has_more=has_more)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints", responses=errors(404))
def checkpoints(c: ContainerDep, org: OrgDep, job_id: str, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 10,
                after: str | None = None) -> ListResponse[FineTuningJobCheckpoint]:
    data, has_more = c.jobs.checkpoints(org.id, job_id, limit=limit, after=after)
    return ListResponse(data=data, has_more=has_more)
