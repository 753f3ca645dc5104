"""/v1/evals: evals, their runs and the runs' output items."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from tunery.api.deps import ContainerDep, OrgDep
from tunery.api.responses import errors
from tunery.protocol.common import ListResponse
from tunery.protocol.evals import (CreateEvalRequest, CreateRunRequest, Eval, EvalDeleted, EvalRun, EvalRunDeleted,
                                   ItemStatus, OutputItem, RunStatus, UpdateEvalRequest)

router = APIRouter(tags=["evals"])
MAX_PAGE = 100
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Order = Literal["asc", "desc"]


class EvalList(ListResponse[Eval]):
    first_id: str | None = None
    last_id: str | None = None


class RunList(ListResponse[EvalRun]):
    first_id: str | None = None
    last_id: str | None = None


class OutputItemList(ListResponse[OutputItem]):
    first_id: str | None = None
    last_id: str | None = None


def _page(kind, data: list, has_more: bool):
    return kind(data=data, has_more=has_more, first_id=data[0].id if data else None,
                last_id=data[-1].id if data else None)


def _reported(request: Request, run: EvalRun) -> EvalRun:
    """The run with its report_url: its eval's page in the console (served at / of the address the
    client called), the run marked there."""
    return run.model_copy(update={"report_url": f"{request.base_url}#/evals/{run.eval_id}?run={run.id}"})


@router.post("/evals")
def create(c: ContainerDep, org: OrgDep, body: CreateEvalRequest) -> Eval:
    return c.evals.create(org.id, body)


@router.get("/evals")
def list_evals(c: ContainerDep, org: OrgDep, limit: Limit = 20, after: str | None = None, order: Order = "asc",
               order_by: Literal["created_at", "updated_at"] = "created_at") -> EvalList:
    return _page(EvalList, *c.evals.list(org.id, limit=limit, after=after, order=order, order_by=order_by))


@router.get("/evals/{eval_id}", responses=errors(404))
def retrieve(c: ContainerDep, org: OrgDep, eval_id: str) -> Eval:
    return c.evals.retrieve(org.id, eval_id)


@router.post("/evals/{eval_id}", responses=errors(404))
def update(c: ContainerDep, org: OrgDep, eval_id: str, body: UpdateEvalRequest) -> Eval:
    return c.evals.update(org.id, eval_id, body)


@router.delete("/evals/{eval_id}", responses=errors(404))
def delete(c: ContainerDep, org: OrgDep, eval_id: str) -> EvalDeleted:
    return c.evals.delete(org.id, eval_id)


@router.post("/evals/{eval_id}/runs", responses=errors(404, 429))
def create_run(request: Request, c: ContainerDep, org: OrgDep, eval_id: str, body: CreateRunRequest) -> EvalRun:
    return _reported(request, c.evals.create_run(org.id, eval_id, body))


@router.get("/evals/{eval_id}/runs", responses=errors(404))
def list_runs(request: Request, c: ContainerDep, org: OrgDep, eval_id: str, limit: Limit = 20, after: str | None = None,
              order: Order = "asc", status: RunStatus | None = None) -> RunList:
    runs, has_more = c.evals.runs(org.id, eval_id, limit=limit, after=after, order=order, status=status)
    return _page(RunList, [_reported(request, run) for run in runs], has_more)


@router.get("/evals/{eval_id}/runs/{run_id}", responses=errors(404))
def retrieve_run(request: Request, c: ContainerDep, org: OrgDep, eval_id: str, run_id: str) -> EvalRun:
    return _reported(request, c.evals.run(org.id, eval_id, run_id))


@router.post("/evals/{eval_id}/runs/{run_id}/cancel", responses=errors(404, 409))
def cancel_run(request: Request, c: ContainerDep, org: OrgDep, eval_id: str, run_id: str) -> EvalRun:
    return _reported(request, c.evals.cancel_run(org.id, eval_id, run_id))


@router.delete("/evals/{eval_id}/runs/{run_id}", responses=errors(404))
def delete_run(c: ContainerDep, org: OrgDep, eval_id: str, run_id: str) -> EvalRunDeleted:
    return c.evals.delete_run(org.id, eval_id, run_id)


@router.get("/evals/{eval_id}/runs/{run_id}/output_items", responses=errors(404))
def list_output_items(c: ContainerDep, org: OrgDep, eval_id: str, run_id: str, limit: Limit = 20,
                      after: str | None = None, order: Order = "asc", status: ItemStatus | None = None) -> OutputItemList:
    return _page(OutputItemList, *c.evals.output_items(org.id, eval_id, run_id, limit=limit, after=after, order=order,
                                                       status=status))


@router.get("/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}", responses=errors(404))
def retrieve_output_item(c: ContainerDep, org: OrgDep, eval_id: str, run_id: str, output_item_id: str) -> OutputItem:
    return c.evals.output_item(org.id, eval_id, run_id, output_item_id)
