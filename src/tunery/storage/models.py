"""Rows of fine-tuned models (their weights live in BlobStore.model_dir(job_id))."""

from __future__ import annotations

from sqlalchemy import select

from tunery.storage.db import Database
from tunery.storage.tables import FineTunedModel


class ModelsRepo:
    def __init__(self, db: Database):
        self.db = db

    def add(self, row: FineTunedModel) -> FineTunedModel:
        with self.db.session() as s:
            s.add(row)
        return row

    def get(self, model_id: str) -> FineTunedModel | None:
        with self.db.session() as s:
            return s.get(FineTunedModel, model_id)

    def list(self, org_id: str) -> list[FineTunedModel]:
        with self.db.session() as s:
            query = select(FineTunedModel).where(FineTunedModel.organization_id == org_id)
            return list(s.scalars(query.order_by(FineTunedModel.created_at, FineTunedModel.id)))
