"""Models: the base models of the catalog and each organization's fine-tuned models and
checkpoints. It decides, once, which weights a model name runs on (a ResolvedModel and its
Weights), and it keeps what jobs make: checkpoints (the last three, only the newest able to
resume) and the published fine-tuned model."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunery.catalog import BASE_MODEL_OWNER, Catalog, UnknownModel
from tunery.errors import InvalidRequest, NotFound, PermissionDenied
from tunery.hub import is_hub_id
from tunery.ids import new_id, now
from tunery.protocol.models import Model, ModelDeleted
from tunery.storage.models import ModelsRepo
from tunery.storage.tables import Checkpoint, FineTunedModel
from tunery.training.checkpoints import TRAINER_SHARDS, TRAINER_STATE, drop_trainer_state, read_manifest
from tunery.weights import Weights, WeightsKind

if TYPE_CHECKING:
    from tunery.services.queue import ClaimedJob

MODEL_ID_LENGTH = 8  # the last field of ft:BASE:ORG:SUFFIX:ID, taken from the job id's end
KEPT_CHECKPOINTS = 3  # as OpenAI: the last three epochs' checkpoints


@dataclass(frozen=True)
class ResolvedModel:
    """A model an organization may use, and what it is made of."""
    id: str
    base_name: str  # the catalog's base model it descends from
    kind: WeightsKind
    artefacts: Path | None  # a fine-tune's folder (its LoRA adapter or its full weights); None for a base model
    catalog: Catalog = field(repr=False, compare=False)
    job_id: str | None = None  # the job that made a fine-tune
    step: int | None = None  # a checkpoint's step (None: the job's final model)

    @property
    def training_type(self) -> str | None:
        """How a fine-tuned model was trained ("lora" | "full"); None for a base model."""
        return None if self.kind == "base" else self.kind

    @property
    def weights(self) -> Weights:
        """The folders to load (the embedded base model is converted on first use); NotFound
        naming the base when a LoRA's base has left this machine (a hub model removed from the cache)."""
        if self.kind == "full":
            return Weights("full", self.artefacts)
        try:
            base = self.catalog.path(self.base_name)
        except UnknownModel as exc:
            raise NotFound(f"The base model of '{self.id}' is not here: {exc}", param="model",
                           code="model_not_found") from None
        return Weights(self.kind, base, self.artefacts if self.kind == "lora" else None)


@dataclass(frozen=True)
class JobOutput:
    """The model a training job is making: its name, and how its checkpoints are trained."""
    job_id: str
    organization_id: str
    organization_name: str
    base_model: str
    model_id: str  # ft:BASE:ORG:SUFFIX:ID; checkpoints add :ckpt-step-N
    training_type: str  # lora | full


@dataclass(frozen=True)
class ResumePoint:
    folder: Path  # a complete checkpoint holding the trainer state
    step: int


class ModelsService:
    def __init__(self, catalog: Catalog, repo: ModelsRepo):
        self.catalog = catalog
        self.repo = repo
        self._started = now()  # base models have no creation date of their own here
        self.on_delete: list = []  # called with a deleted model's folder (the engine drops its weights)

    def list(self, org_id: str, owner: str) -> list[Model]:
        """Base models, then the organization's (named `owner`) fine-tuned models and checkpoints."""
        base = [Model(id=name, created=self._started, owned_by=BASE_MODEL_OWNER) for name in self.catalog.names()]
        models = [Model(id=row.id, created=row.created_at, owned_by=owner) for row in self.repo.list(org_id)]
        checkpoints = [Model(id=row.model_id, created=row.created_at, owned_by=owner)
                       for row in self.repo.org_checkpoints(org_id)]
        return base + models + checkpoints

    def retrieve(self, org_id: str, owner: str, model_id: str) -> Model:
        return next((m for m in self.list(org_id, owner) if m.id == model_id), None) or self._not_found(model_id)

    def delete(self, org_id: str, model_id: str) -> ModelDeleted:
        """A fine-tuned model and its weights, for its owner; base models and checkpoints stay."""
        if self.catalog.exists(model_id):
            raise PermissionDenied(f"'{model_id}' is a base model and cannot be deleted.", param="model",
                                   code="model_not_deletable")
        row = self.repo.get(model_id)
        if row is None or row.organization_id != org_id:
            self._not_found(model_id)
        self.repo.delete(model_id)
        folder = self.catalog.blobs.model_dir(row.job_id)
        for listener in self.on_delete:
            listener(folder)
        self.catalog.blobs.delete_dir(folder)
        self.catalog.blobs.delete_dir(self.catalog.blobs.export_path(row.job_id, "model", "hf").parent)
        return ModelDeleted(id=model_id, deleted=True)

    def export(self, org_id: str, model_id: str, fmt: str) -> Path:
        """A zip of the fine-tuned model or checkpoint in `fmt` (export.FORMATS), for its owner;
        made once and kept until the model goes."""
        from tunery.export import FORMATS, ExportError, export

        if fmt not in FORMATS:
            raise InvalidRequest(f"Unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.", param="format")
        model = self.resolve(org_id, model_id)
        if model.kind == "base":
            raise InvalidRequest(f"'{model_id}' is a base model: take it from where it comes from "
                                 f"({self.catalog.public_id(model.base_name)}).", param="model")
        blobs = self.catalog.blobs
        target = blobs.export_path(model.job_id, "model" if model.step is None else f"ckpt-step-{model.step}", fmt)
        # One export at a time on this data directory: each holds a model's merged weights in memory.
        with blobs.exclusive("export"):
            if not target.exists():
                with blobs.staging_dir() as staged:
                    (staged / "export").mkdir()
                    try:
                        export(model.weights, fmt, staged / "export", name=model_id,
                               base_id=self.catalog.public_id(model.base_name))
                    except ExportError as exc:
                        raise InvalidRequest(str(exc), param="format") from None
                    with zipfile.ZipFile(staged / "export.zip", "w", zipfile.ZIP_STORED) as archive:
                        for path in sorted((staged / "export").rglob("*")):
                            archive.write(path, path.relative_to(staged / "export"))
                    blobs.publish_file(staged / "export.zip", target)
        return target

    def is_base(self, model_id: str) -> bool:
        return self.catalog.exists(model_id)

    def resolve(self, org_id: str, model_id: str, *, param: str = "model", downloadable: bool = False) -> ResolvedModel:
        """What a model this organization may use is made of; NotFound otherwise. downloadable:
        a hub model not cached yet counts (a job downloads it before training)."""
        if self.catalog.exists(model_id) or (downloadable and self.catalog.obtainable(model_id)):
            return ResolvedModel(model_id, model_id, "base", None, self.catalog)
        row = self.repo.get(model_id)
        if row is not None and row.organization_id == org_id:
            return ResolvedModel(model_id, row.base_model, row.training_type, self.catalog.blobs.model_dir(row.job_id),
                                 self.catalog, row.job_id)
        checkpoint = self.repo.checkpoint(model_id)
        if checkpoint is not None and checkpoint.organization_id == org_id:
            folder = self.catalog.blobs.checkpoint_dir(checkpoint.job_id, checkpoint.step_number)
            return ResolvedModel(model_id, checkpoint.base_model, checkpoint.training_type, folder, self.catalog,
                                 checkpoint.job_id, checkpoint.step_number)
        if not model_id.startswith("ft:") and (self.catalog.target(model_id) != model_id or is_hub_id(model_id)):
            raise NotFound(self.catalog.why_unknown(model_id), param=param, code="model_not_found")
        self._not_found(model_id, param)

    @staticmethod
    def _not_found(model_id: str, param: str = "model"):
        raise NotFound(f"The model '{model_id}' does not exist or you do not have access to it.",
                       param=param, code="model_not_found")

    # what training jobs make -----------------------------------------------------------------------
    def output_of(self, job: ClaimedJob, training_type: str) -> JobOutput:
        """The fine-tuned model is named after the model the job names (an alias included, as
        code written for OpenAI expects) and records the model it was trained on (an alias's
        target now), so that changing an alias later cannot move the base under its adapter."""
        model_id = f"ft:{job.base_model}:{job.organization_name}:{job.suffix or ''}:{job.id[-MODEL_ID_LENGTH:]}"
        return JobOutput(job.id, job.organization_id, job.organization_name, self.catalog.target(job.base_model),
                         model_id, training_type)

    def save_checkpoint(self, output: JobOutput, step: int, metrics: dict[str, Any],
                        write: Callable[[Path], None]) -> bool:
        """A checkpoint of `step`, written by write(folder) aside and renamed into place; only
        the last KEPT_CHECKPOINTS stay, and only the newest keeps the trainer state (what
        resuming needs). A step has one checkpoint: False when it already had one (a job
        paused at an epoch's end keeps that epoch's)."""
        blobs = self.catalog.blobs
        newest = self.repo.checkpoints(output.job_id, limit=1)
        if newest and newest[0].step_number == step:
            return False
        with blobs.staging_dir() as staged:
            write(staged)
            blobs.publish_dir(staged, blobs.checkpoint_dir(output.job_id, step))
        self.repo.add_checkpoint(Checkpoint(
            id=new_id("ftckpt"), model_id=f"{output.model_id}:ckpt-step-{step}", job_id=output.job_id,
            base_model=output.base_model, organization_id=output.organization_id, step_number=step,
            training_type=output.training_type, metrics=metrics, created_at=now()))
        older = self.repo.checkpoints(output.job_id)[1:]
        for row in older:
            drop_trainer_state(blobs.checkpoint_dir(output.job_id, row.step_number))
        dropped = older[KEPT_CHECKPOINTS - 1:]
        self.repo.delete_checkpoints([row.id for row in dropped])
        for row in dropped:
            blobs.delete_dir(blobs.checkpoint_dir(output.job_id, row.step_number))
        return True

    def resume_point(self, job_id: str) -> ResumePoint | None:
        """The newest checkpoint when it is complete and holds the trainer state to go on from;
        otherwise whatever checkpoints there are go, and the job starts over."""
        newest = self.repo.checkpoints(job_id, limit=1)
        if not newest:
            return None
        folder = self.catalog.blobs.checkpoint_dir(job_id, newest[0].step_number)
        try:
            read_manifest(folder)
            if (folder / TRAINER_STATE).exists():
                return ResumePoint(folder, newest[0].step_number)
        except ValueError:
            pass
        self.discard_job_artefacts(job_id)
        return None

    def last_checkpoint_step(self, job_id: str) -> int | None:
        newest = self.repo.checkpoints(job_id, limit=1)
        return newest[0].step_number if newest else None

    def publish(self, output: JobOutput) -> None:
        """The fine-tuned model is the job's last checkpoint: its files hard-linked (no second
        copy on disk), without the trainer state. Publishing again is harmless."""
        blobs = self.catalog.blobs
        last = self.repo.checkpoints(output.job_id, limit=1)[0]
        blobs.link_copy(blobs.checkpoint_dir(output.job_id, last.step_number), blobs.model_dir(output.job_id),
                        skip=(TRAINER_STATE, TRAINER_SHARDS))
        if self.repo.get(output.model_id) is not None:
            return  # published by a worker that died before the job read succeeded
        self.repo.add(FineTunedModel(id=output.model_id, organization_id=output.organization_id,
                                     organization_name=output.organization_name, base_model=output.base_model,
                                     job_id=output.job_id, training_type=output.training_type, created_at=now()))

    def discard_job_artefacts(self, job_id: str) -> None:
        """A cancelled job's checkpoints (rows and weights); it leaves no model behind."""
        self.repo.delete_checkpoints([row.id for row in self.repo.checkpoints(job_id)])
        self.catalog.blobs.delete_job_artefacts(job_id)
