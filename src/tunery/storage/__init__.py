"""Persistence: the only code that knows SQL (SQLAlchemy) and paths on disk (blobs)."""

from tunery.storage.blobs import BlobStore
from tunery.storage.db import Database

__all__ = ["BlobStore", "Database"]
