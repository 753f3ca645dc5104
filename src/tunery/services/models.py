"""Models: the base models of the catalog and each organization's fine-tuned models, and the
resolution of a model name to the weights that serve or continue it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunery.catalog import BASE_MODEL_OWNER, Catalog
from tunery.errors import NotFound, PermissionDenied
from tunery.ids import now
from tunery.protocol.models import Model, ModelDeleted
from tunery.storage.models import ModelsRepo
from tunery.training.checkpoints import is_adapter


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    base_name: str  # the catalog's base model it descends from
    adapter_path: Path | None  # a fine-tuned model's artefacts (a LoRA adapter or full weights); None for a base model
    catalog: Catalog = field(repr=False, compare=False)

    @property
    def base_path(self) -> Path:
        """The base model's Hugging Face folder (converting the embedded model on first use)."""
        return self.catalog.path(self.base_name)

    @property
    def training_type(self) -> str | None:
        if self.adapter_path is None:
            return None
        return "lora" if is_adapter(self.adapter_path) else "full"


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
        return ModelDeleted(id=model_id, deleted=True)

    def discard_job_artefacts(self, job_id: str) -> None:
        """A cancelled job's checkpoints (rows and weights); it leaves no model behind."""
        self.repo.delete_checkpoints([row.id for row in self.repo.checkpoints(job_id)])
        self.catalog.blobs.delete_job_artefacts(job_id)

    def is_base(self, model_id: str) -> bool:
        return self.catalog.exists(model_id)

    def resolve(self, org_id: str, model_id: str, *, param: str = "model") -> ResolvedModel:
        """Where the weights of a model this organization may use are; NotFound otherwise."""
        if self.catalog.exists(model_id):
            return ResolvedModel(model_id, model_id, None, self.catalog)
        row = self.repo.get(model_id)
        if row is not None and row.organization_id == org_id:
            return ResolvedModel(model_id, row.base_model, self.catalog.blobs.model_dir(row.job_id), self.catalog)
        checkpoint = self.repo.checkpoint(model_id)
        if checkpoint is not None and checkpoint.organization_id == org_id:
            folder = self.catalog.blobs.checkpoint_dir(checkpoint.job_id, checkpoint.step_number)
            return ResolvedModel(model_id, checkpoint.base_model, folder, self.catalog)
        self._not_found(model_id, param)

    @staticmethod
    def _not_found(model_id: str, param: str = "model"):
        raise NotFound(f"The model '{model_id}' does not exist or you do not have access to it.",
                       param=param, code="model_not_found")
