"""Organizations and their API keys (kept as sha256 hashes; the key itself is shown once)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from tunery.ids import new_id, now
from tunery.storage.db import Database
from tunery.storage.tables import ApiKey, Organization

KEY_PREFIX = "sk-tunery-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class OrgsRepo:
    def __init__(self, db: Database):
        self.db = db

    def ensure(self, name: str) -> Organization:
        with self.db.session() as s:
            org = s.scalar(select(Organization).where(Organization.name == name))
            if org is None:
                org = Organization(id=new_id("org"), name=name, created_at=now())
                s.add(org)
            return org

    def get(self, org_id: str) -> Organization | None:
        with self.db.reading() as s:
            return s.get(Organization, org_id)

    def create_key(self, org_id: str) -> str:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as s:
            s.add(ApiKey(id=new_id("key"), organization_id=org_id, key_hash=hash_key(key), created_at=now(),
                         hint=f"sk-...{key[-4:]}"))
        return key

    def keys(self) -> list[tuple[ApiKey, str]]:
        """Every key with its organization's name, oldest first."""
        with self.db.reading() as s:
            rows = s.execute(select(ApiKey, Organization.name).join(Organization).order_by(ApiKey.created_at, ApiKey.id))
            return [(key, name) for key, name in rows]

    def revoke(self, key_id: str) -> bool:
        """False when there is no such key or it was revoked already."""
        with self.db.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = now()
            return True

    def org_for_key(self, key: str) -> Organization | None:
        """The key's organization, or None for an unknown or revoked key. The lookup goes by the
        key's hash, so no comparison ever touches the key itself."""
        with self.db.reading() as s:
            return s.scalar(select(Organization).join(ApiKey).where(ApiKey.key_hash == hash_key(key),
                                                                    ApiKey.revoked_at.is_(None)))
