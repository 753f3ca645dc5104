"""Rows of uploaded files (the bytes live in BlobStore)."""

from __future__ import annotations

from sqlalchemy import select

from tunery.storage.db import Database
from tunery.storage.tables import File


class FilesRepo:
    def __init__(self, db: Database):
        self.db = db

    def add(self, row: File) -> File:
        with self.db.session() as s:
            s.add(row)
        return row

    def get(self, org_id: str, file_id: str) -> File | None:
        with self.db.reading() as s:
            row = s.get(File, file_id)
            return row if row is not None and row.organization_id == org_id else None

    def list(self, org_id: str, *, purpose: str | None = None, limit: int = 10000,
             after: str | None = None, order: str = "desc") -> list[File]:
        with self.db.reading() as s:
            query = select(File).where(File.organization_id == org_id)
            if purpose:
                query = query.where(File.purpose == purpose)
            if after and (anchor := s.get(File, after)) is not None:
                query = query.where(File.sort_key < anchor.sort_key if order == "desc" else File.sort_key > anchor.sort_key)
            keys = (File.sort_key.desc(),) if order == "desc" else (File.sort_key,)
            return list(s.scalars(query.order_by(*keys).limit(limit)))

    def delete(self, file_id: str) -> None:
        with self.db.session() as s:
            row = s.get(File, file_id)
            if row is not None:
                s.delete(row)
