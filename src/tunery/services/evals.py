"""Evals as the API sees them: create (the item_schema is a JSON schema, every testing criterion
checked as graders/validate checks a grader, its judge models this organization's), list,
retrieve, update, delete; runs: create (the data source's items checked against the item_schema
before anything is stored, the model resolved, templates checked), list, retrieve, cancel,
delete; and each run's output items. A run is executed by a worker (jobs/evals.py) through
services/eval_runs.RunQueue. Another organization's evals answer 404, as if they did not exist."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from tunery.errors import Conflict, InvalidRequest, NotFound, RateLimited, unknown_cursor
from tunery.ids import now
from tunery.protocol.evals import (CompletionsDataSource, CreateEvalRequest, CreateRunRequest, CustomDataSourceConfig,
                                   Eval, EvalDeleted, EvalError, EvalRun, EvalRunDeleted, FileContentSource,
                                   ItemReference, OutputItem, PerModelUsage, PerTestingCriteriaResult, ResultCounts,
                                   TestingCriterion, UpdateEvalRequest)
from tunery.services import eval_items
from tunery.services.common import check_finite, check_metadata
from tunery.services.files import FilesService
from tunery.services.graders import GradersService
from tunery.services.models import ModelsService
from tunery.storage.evals import EvalsRepo
from tunery.storage.tables import Eval as EvalRow
from tunery.storage.tables import EvalOutputItem, EvalRun as EvalRunRow

MAX_ACTIVE_RUNS = 20  # per organization: runs queued or in progress; more answers 429
MAX_RUN_ITEMS = 100_000  # items of one run
CRITERIA = TypeAdapter(list[TestingCriterion])
FINISHED_RUN = ("completed", "failed", "canceled")


def new_id(prefix: str) -> str:
    """OpenAI's ids of evals objects: eval_, evalrun_, outputitem_ and 32 hex digits."""
    return f"{prefix}_{secrets.token_hex(16)}"


def eval_object(row: EvalRow) -> Eval:
    config = row.data_source_config
    schema = eval_items.data_source_schema(config["item_schema"], config.get("include_sample_schema", False))
    return Eval(id=row.id, created_at=row.created_at, name=row.name, metadata=row.metadata_,
                data_source_config=CustomDataSourceConfig(schema=schema),
                testing_criteria=CRITERIA.validate_python(row.testing_criteria))


def run_object(row: EvalRunRow) -> EvalRun:
    criteria = [PerTestingCriteriaResult(testing_criteria=name, **counts) for name, counts in row.per_criteria.items()]
    usage = [PerModelUsage(model_name=model, **counts) for model, counts in row.per_model_usage.items()]
    return EvalRun(id=row.id, created_at=row.created_at, eval_id=row.eval_id, name=row.name, model=row.model,
                   status=row.status, data_source=row.data_source, error=EvalError(**row.error) if row.error else None,
                   metadata=row.metadata_, result_counts=ResultCounts(**row.result_counts),
                   per_testing_criteria_results=criteria, per_model_usage=usage)


def item_object(row: EvalOutputItem, eval_id: str) -> OutputItem:
    return OutputItem(id=row.id, created_at=row.created_at, run_id=row.run_id, eval_id=eval_id,
                      datasource_item_id=row.datasource_item_id, datasource_item=row.datasource_item,
                      results=row.results, sample=row.sample, status=row.status)


class EvalsService:
    def __init__(self, repo: EvalsRepo, files: FilesService, models: ModelsService, graders: GradersService):
        self.repo = repo
        self.files = files
        self.models = models
        self.graders = graders

    # evals -----------------------------------------------------------------------------------------
    def create(self, org_id: str, request: CreateEvalRequest) -> Eval:
        check_finite(request.model_dump(exclude_none=True), "")
        config = request.data_source_config
        if (problem := eval_items.schema_error(config.item_schema)) is not None:
            raise InvalidRequest(f"item_schema is not a JSON schema: {problem}", param="data_source_config.item_schema")
        names = set()
        for index, criterion in enumerate(request.testing_criteria):
            self.graders.check(org_id, criterion, param=f"testing_criteria.{index}")
            if criterion.name in names:
                raise InvalidRequest(f"Two testing criteria are named {criterion.name!r}: each needs a name of its own.",
                                     param=f"testing_criteria.{index}.name")
            names.add(criterion.name)
        check_metadata(request.metadata)
        row = EvalRow(id=new_id("eval"), organization_id=org_id, name=request.name or "Eval", metadata_=request.metadata,
                      data_source_config=config.model_dump(),
                      testing_criteria=[c.model_dump(exclude_none=True) for c in request.testing_criteria],
                      created_at=now())
        self.repo.add(row)
        return eval_object(row)

    def list(self, org_id: str, *, limit: int, after: str | None, order: str,
             order_by: str) -> tuple[list[Eval], bool]:
        if after is not None and self.repo.get(org_id, after) is None:
            raise unknown_cursor("Eval", after)
        rows = self.repo.list(org_id, limit=limit + 1, after=after, order=order, order_by=order_by)
        return [eval_object(r) for r in rows[:limit]], len(rows) > limit

    def retrieve(self, org_id: str, eval_id: str) -> Eval:
        return eval_object(self._eval(org_id, eval_id))

    def update(self, org_id: str, eval_id: str, request: UpdateEvalRequest) -> Eval:
        self._eval(org_id, eval_id)
        check_metadata(request.metadata)
        check_finite(request.model_dump(exclude_none=True), "")
        fields = request.model_dump(exclude_unset=True)
        if "metadata" in fields:
            fields["metadata_"] = fields.pop("metadata")
        if fields.get("name") is None:
            fields.pop("name", None)
        self.repo.update(eval_id, **fields)
        return self.retrieve(org_id, eval_id)

    def delete(self, org_id: str, eval_id: str) -> EvalDeleted:
        self._eval(org_id, eval_id)
        self.repo.delete(eval_id)
        return EvalDeleted(deleted=True, eval_id=eval_id)

    def _eval(self, org_id: str, eval_id: str) -> EvalRow:
        row = self.repo.get(org_id, eval_id)
        if row is None:
            raise NotFound(f"Eval {eval_id} not found.", param="eval_id")
        return row

    # runs ------------------------------------------------------------------------------------------
    def create_run(self, org_id: str, eval_id: str, request: CreateRunRequest) -> EvalRun:
        row = self._eval(org_id, eval_id)
        check_finite(request.model_dump(exclude_none=True), "")
        source = request.data_source
        model = None
        if isinstance(source, CompletionsDataSource):
            model = source.model
            try:
                self.models.resolve(org_id, model, param="data_source.model")
            except NotFound as exc:
                raise InvalidRequest(exc.message, param="data_source.model", code=exc.code) from None
            self._check_input_messages(source)
        count = self._check_items(org_id, row.data_source_config["item_schema"], source.source)
        check_metadata(request.metadata)
        if self.repo.count_active_runs(org_id) >= MAX_ACTIVE_RUNS:
            raise RateLimited(f"This organization already has {MAX_ACTIVE_RUNS} eval runs queued or in progress; wait "
                              "for one to finish.", code="rate_limit_exceeded")
        run = EvalRunRow(
            id=new_id("evalrun"), eval_id=eval_id, organization_id=org_id, name=request.name or model or source.type,
            model=model, status="queued", data_source=source.model_dump(exclude_none=True), metadata_=request.metadata,
            result_counts=ResultCounts(total=count).model_dump(),
            per_criteria={c["name"]: {"passed": 0, "failed": 0} for c in row.testing_criteria},
            per_model_usage={}, items_done=0, created_at=now())
        self.repo.add(run)
        return run_object(run)

    def _check_input_messages(self, source: CompletionsDataSource) -> None:
        for param, text in eval_items.input_templates(source.input_messages):
            for template in eval_items.item_templates(text):
                raise InvalidRequest(f"The template {template!r} reads no item: the messages a model is asked see "
                                     "only the item ({{item.<field>}}); the sample is what it answers.", param=param)
        reference = source.input_messages
        if isinstance(reference, ItemReference) and not reference.item_reference.strip("{} ").startswith("item."):
            raise InvalidRequest(f"item_reference names the item's messages, as 'item.<field>', not "
                                 f"{reference.item_reference!r}.", param="data_source.input_messages.item_reference")
        if source.sampling_params is not None and source.sampling_params.tools:
            for index, tool in enumerate(source.sampling_params.tools):
                if not isinstance(tool.get("function"), dict) or not isinstance(tool["function"].get("name"), str):
                    raise InvalidRequest("A tool is {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                                         param=f"data_source.sampling_params.tools.{index}")

    def _check_items(self, org_id: str, item_schema: dict[str, Any], source) -> int:
        """Every item of the source checked against the item_schema (400 naming the item and
        field); how many there are."""
        checker = eval_items.ItemChecker(item_schema)
        if isinstance(source, FileContentSource):
            rows, where = eval_items.content_rows(source.content), "data_source.source.content.{}.item"
        else:
            rows, where = self.file_rows(org_id, source.id, param="data_source.source.id"), "data_source.source.id"
        count = 0
        for index, row in enumerate(rows):
            if (problem := checker.describe(index, row["item"])) is not None:
                raise InvalidRequest(problem + ".", param=where.format(index), code="invalid_item")
            count += 1
            if count > MAX_RUN_ITEMS:
                raise InvalidRequest(f"A run holds at most {MAX_RUN_ITEMS} items.", param=where.format(index))
        if count == 0:
            raise InvalidRequest("The data source holds no items.", param=where.format(0).removesuffix(".0.item"))
        return count

    def file_rows(self, org_id: str, file_id: str, param: str) -> list[dict[str, Any]]:
        """The rows of an uploaded JSONL file of this organization (400 naming the line otherwise)."""
        try:
            path: Path = self.files.content_path(org_id, file_id)
        except NotFound:
            raise InvalidRequest(f"File {file_id} does not exist.", param=param, code="invalid_file") from None
        try:
            return list(eval_items.file_rows(path))
        except eval_items.RowError as exc:
            raise InvalidRequest(f"File {file_id}, {exc}.", param=param, code="invalid_file") from None

    def runs(self, org_id: str, eval_id: str, *, limit: int, after: str | None, order: str,
             status: str | None) -> tuple[list[EvalRun], bool]:
        self._eval(org_id, eval_id)
        if after is not None and self.repo.run(eval_id, after) is None:
            raise unknown_cursor("EvalRun", after)
        rows = self.repo.runs(eval_id, limit=limit + 1, after=after, order=order, status=status)
        return [run_object(r) for r in rows[:limit]], len(rows) > limit

    def run(self, org_id: str, eval_id: str, run_id: str) -> EvalRun:
        return run_object(self._run(org_id, eval_id, run_id))

    def cancel_run(self, org_id: str, eval_id: str, run_id: str) -> EvalRun:
        """Canceled at once; a worker executing it stops at its next batch, writing nothing more."""
        row = self._run(org_id, eval_id, run_id)
        if row.status in FINISHED_RUN or not self.repo.cancel_run(run_id):
            raise Conflict(f"Run {run_id} is {self._run(org_id, eval_id, run_id).status} and cannot be canceled.",
                           param="run_id")
        return self.run(org_id, eval_id, run_id)

    def delete_run(self, org_id: str, eval_id: str, run_id: str) -> EvalRunDeleted:
        self._run(org_id, eval_id, run_id)
        self.repo.delete_run(run_id)
        return EvalRunDeleted(deleted=True, run_id=run_id)

    def _run(self, org_id: str, eval_id: str, run_id: str) -> EvalRunRow:
        self._eval(org_id, eval_id)
        row = self.repo.run(eval_id, run_id)
        if row is None:
            raise NotFound(f"Run {run_id} of eval {eval_id} not found.", param="run_id")
        return row

    # output items ----------------------------------------------------------------------------------
    def output_items(self, org_id: str, eval_id: str, run_id: str, *, limit: int, after: str | None, order: str,
                     status: str | None) -> tuple[list[OutputItem], bool]:
        self._run(org_id, eval_id, run_id)
        if after is not None and self.repo.output_item(run_id, after) is None:
            raise unknown_cursor("EvalRunOutputItem", after)
        rows = self.repo.output_items(run_id, limit=limit + 1, after=after, order=order, status=status)
        return [item_object(r, eval_id) for r in rows[:limit]], len(rows) > limit

    def output_item(self, org_id: str, eval_id: str, run_id: str, item_id: str) -> OutputItem:
        self._run(org_id, eval_id, run_id)
        row = self.repo.output_item(run_id, item_id)
        if row is None:
            raise NotFound(f"Output item {item_id} of run {run_id} not found.", param="output_item_id")
        return item_object(row, eval_id)
