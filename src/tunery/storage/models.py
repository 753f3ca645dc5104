"""Rows of fine-tuned models and of their jobs' checkpoints (the weights live in
BlobStore.model_dir(job_id) and BlobStore.checkpoint_dir(job_id, step))."""

from __future__ import annotations

from sqlalchemy import delete, select

from tunery.storage.db import Database
from tunery.storage.tables import Checkpoint, FineTunedModel


class ModelsRepo:
    def __init__(self, db: Database):
        self.db = db

    def add(self, row: FineTunedModel) -> FineTunedModel:
        with self.db.session() as s:
            s.add(row)
        return row

    def get(self, model_id: str) -> FineTunedModel | None:
        with self.db.reading() as s:
            return s.get(FineTunedModel, model_id)

    def delete(self, model_id: str) -> None:
        with self.db.session() as s:
            s.execute(delete(FineTunedModel).where(FineTunedModel.id == model_id))

    def list(self, org_id: str) -> list[FineTunedModel]:
        with self.db.reading() as s:
            query = select(FineTunedModel).where(FineTunedModel.organization_id == org_id)
            return list(s.scalars(query.order_by(FineTunedModel.created_at, FineTunedModel.id)))

    # checkpoints -----------------------------------------------------------------------------
    def add_checkpoint(self, row: Checkpoint) -> Checkpoint:
        with self.db.session() as s:
            s.add(row)
        return row

    def checkpoint(self, model_id: str) -> Checkpoint | None:
        with self.db.reading() as s:
            return s.scalar(select(Checkpoint).where(Checkpoint.model_id == model_id))

    def job_checkpoint(self, job_id: str, checkpoint_id: str) -> Checkpoint | None:
        """The checkpoint with that id (ftckpt-...), or None when it does not exist or is another job's."""
        with self.db.reading() as s:
            row = s.get(Checkpoint, checkpoint_id)
            return row if row is not None and row.job_id == job_id else None

    def checkpoints(self, job_id: str, *, limit: int | None = None, after: str | None = None) -> list[Checkpoint]:
        """Newest first; `after` is the last checkpoint id of the previous page."""
        with self.db.reading() as s:
            query = select(Checkpoint).where(Checkpoint.job_id == job_id)
            if after and (anchor := s.get(Checkpoint, after)) is not None:
                query = query.where(Checkpoint.step_number < anchor.step_number)
            return list(s.scalars(query.order_by(Checkpoint.step_number.desc()).limit(limit)))

    def org_checkpoints(self, org_id: str) -> list[Checkpoint]:
        with self.db.reading() as s:
            query = select(Checkpoint).where(Checkpoint.organization_id == org_id)
            return list(s.scalars(query.order_by(Checkpoint.created_at, Checkpoint.step_number)))

    def delete_checkpoints(self, ids: list[str]) -> None:
        with self.db.session() as s:
            s.execute(delete(Checkpoint).where(Checkpoint.id.in_(ids)))
