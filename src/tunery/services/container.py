"""The wiring of settings to storage and services, once per process: the API and every worker
are built from the same container."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from tunery.catalog import Catalog
from tunery.config import Settings, parse_aliases
from tunery.graders import PythonSandbox
from tunery.services.chat import ChatService
from tunery.services.eval_runs import RunQueue
from tunery.services.evals import EvalsService
from tunery.services.files import FilesService
from tunery.services.fine_tuning import JobsService
from tunery.services.graders import GradersService
from tunery.services.models import ModelsService
from tunery.services.organizations import OrganizationsService
from tunery.services.queue import JobQueue
from tunery.storage import BlobStore, Database
from tunery.storage.evals import EvalsRepo
from tunery.storage.files import FilesRepo
from tunery.storage.jobs import JobsRepo
from tunery.storage.models import ModelsRepo
from tunery.storage.orgs import OrgsRepo
from tunery.storage.workers import WorkersRepo


class Container:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.db = Database(settings.database)
        self.db.create_schema()
        self.blobs = BlobStore(settings.data_dir)
        self.catalog = Catalog(self.blobs, parse_aliases(settings.model_aliases))

    @cached_property
    def organizations(self) -> OrganizationsService:
        return OrganizationsService(OrgsRepo(self.db), self.blobs, self.settings.api_key)

    @cached_property
    def files(self) -> FilesService:
        return FilesService(FilesRepo(self.db), self.blobs, self.settings.max_upload_bytes)

    @cached_property
    def models(self) -> ModelsService:
        return ModelsService(self.catalog, ModelsRepo(self.db))

    @cached_property
    def queue(self) -> JobQueue:
        return JobQueue(JobsRepo(self.db), OrgsRepo(self.db), WorkersRepo(self.db), self.settings.job_lease_seconds)

    @cached_property
    def jobs(self) -> JobsService:
        return JobsService(JobsRepo(self.db), FilesRepo(self.db), self.models, self.queue, self.settings.device)

    @cached_property
    def chat(self) -> ChatService:
        from tunery.inference.engine import Engine  # torch is imported only when chat is first used

        engine = Engine(device=self.settings.device, dtype=self.settings.inference_dtype,
                        cache_bytes=self.settings.model_cache_mb << 20, attention=self.settings.attention,
                        cpu_backend=self.settings.cpu_backend, gguf_type=self.settings.gguf_type,
                        gguf_dir=self.blobs.gguf_dir(), kv_cache_bytes=self.settings.kv_cache_mb << 20)
        self.models.on_delete.append(engine.forget)  # a deleted model leaves memory at once
        return ChatService(self.models, engine)

    @cached_property
    def graders(self) -> GradersService:
        python = PythonSandbox(self.settings.python_grader_timeout_seconds,
                               self.settings.python_grader_memory_mb << 20,
                               hidden=(str(self.settings.data_dir),)) if self.settings.python_graders else None
        return GradersService(self.models, lambda: self.chat, python)

    @cached_property
    def evals(self) -> EvalsService:
        return EvalsService(EvalsRepo(self.db), self.files, self.models, self.graders)

    @cached_property
    def eval_runs(self) -> RunQueue:
        """Eval runs as workers see them (jobs/evals.py executes them)."""
        return RunQueue(EvalsRepo(self.db), self.settings.job_lease_seconds)

    def integration_dir(self, name: str) -> Path:
        """Where an integration (W&B) keeps its local files."""
        return self.blobs.integration_dir(name)
