"""Every request needs a key of a known organization; failures use OpenAI's error envelope."""

from __future__ import annotations

import hashlib
import re
import sqlite3

import httpx
import openai
import pytest


def test_missing_or_unknown_key_is_refused_with_401(tiny_server):
    with pytest.raises(openai.AuthenticationError):
        tiny_server.client(api_key="sk-wrong").models.list()
    response = httpx.get(f"{tiny_server.base_url}/models")
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_api_key"


def test_key_printed_at_first_start_is_stored_hashed_and_kept_across_restarts(start_server):
    first = start_server(env_key=False)
    key = re.search(r"API key for organization 'default': (\S+)", first.output()).group(1)
    assert [m.id for m in first.client(api_key=key).models.list()] == ["SmolLM2-135M-Instruct"]
    first.stop()
    with sqlite3.connect(first.data_dir / "tunery.db") as db:
        dump = "\n".join(db.iterdump())
        hashes = [row[0] for row in db.execute("SELECT key_hash FROM api_keys")]
    assert key not in dump
    assert hashes == [hashlib.sha256(key.encode()).hexdigest()]

    second = start_server(env_key=False, data_dir=first.data_dir)
    assert f"'default': {key}" in second.output()
    second.client(api_key=key).models.list()
