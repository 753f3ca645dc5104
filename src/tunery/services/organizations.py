"""Organizations and authentication: which organization an API key belongs to."""

from __future__ import annotations

import hmac

from tunery.config import DEFAULT_ORGANIZATION
from tunery.errors import AuthenticationFailed
from tunery.storage.blobs import BlobStore
from tunery.storage.orgs import OrgsRepo
from tunery.storage.tables import Organization

LOCAL_KEY_SECRET = "default_api_key"  # the key `tunery serve` prints, readable by the data dir's owner only


class OrganizationsService:
    def __init__(self, repo: OrgsRepo, blobs: BlobStore, env_key: str | None):
        self.repo = repo
        self.blobs = blobs
        self.env_key = env_key
        self._env_org: Organization | None = None  # organizations are never deleted: looked up once

    def known(self, key: str | None) -> Organization | None:
        """The organization of TUNERY_API_KEY once it was looked up (it is fixed for the process, and
        organizations are never deleted); None for any other key, which authenticate() looks up."""
        if key and self._env_org is not None and hmac.compare_digest(key.encode(), self.env_key.encode()):
            return self._env_org
        return None

    def authenticate(self, key: str | None) -> Organization:
        if not key:
            raise AuthenticationFailed()
        if self.env_key and hmac.compare_digest(key.encode(), self.env_key.encode()):
            if self._env_org is None:
                self._env_org = self.repo.ensure(DEFAULT_ORGANIZATION)
            return self._env_org
        org = self.repo.org_for_key(key)
        if org is None:
            raise AuthenticationFailed()
        return org

    def default_key(self) -> str:
        """The key to print at start-up for organization "default": TUNERY_API_KEY when set, else
        the one created on first start (its hash in the database, the key in a 0600 file)."""
        org = self.repo.ensure(DEFAULT_ORGANIZATION)
        if self.env_key:
            return self.env_key
        key = self.blobs.read_secret(LOCAL_KEY_SECRET)
        if key is None or self.repo.org_for_key(key) is None:
            key = self.repo.create_key(org.id)
            self.blobs.write_secret(LOCAL_KEY_SECRET, key)
        return key
