"""POST /tunery/files/check: a training file checked against a model as a job would check it,
before any job exists (the console's report), with the same answers as `tunery validate --json`:
every problem with its line and code, the token statistics, the auto epochs, the billed tokens
and the training time measured on this server. Nothing is stored; refusals are OpenAI's envelope."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.helpers import MARV, TINY_MODEL, key_for, upload

PREFERENCE = {"input": {"messages": [{"role": "user", "content": "Hi"}]},
              "preferred_output": [{"role": "assistant", "content": "Hello."}],
              "non_preferred_output": [{"role": "assistant", "content": "Go away."}]}


def check(server, key=None, *, files=None, **fields):
    """multipart/form-data, as the console and `curl -F` send it."""
    parts = [(name, (None, value)) for name, value in fields.items()] + list((files or {}).items())
    return httpx.post(server.base_url.removesuffix("/v1") + "/tunery/files/check", files=parts,
                      headers={"Authorization": f"Bearer {key or server.client().api_key}"}, timeout=120)


def test_a_valid_file_gets_its_statistics_epochs_billed_tokens_and_measured_time(tiny_server):
    files_before = tiny_server.client().files.list().data
    answer = check(tiny_server, files={"file": ("marv.jsonl", MARV)}, model=TINY_MODEL)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["object"] == "tunery.file_report" and report["ok"] and report["model"] == TINY_MODEL
    assert report["format"] == "chat" and report["examples"] == 12 and report["errors"] == []
    stats = report["stats"]
    assert stats["n_epochs"] == 9 and stats["billed_tokens"] == stats["tokens"] * 9
    assert stats["tokens_per_example"]["min"] <= stats["tokens_per_example"]["max"]
    assert stats["estimated_seconds"] > 0
    assert tiny_server.client().files.list().data == files_before  # nothing stored


def test_a_planted_error_is_reported_with_its_line_and_code(tiny_server):
    lines = MARV.splitlines()
    lines[2] = json.dumps({"messages": [{"role": "robot", "content": "beep"}]}).encode()
    report = check(tiny_server, files={"file": ("bad.jsonl", b"\n".join(lines))}, model=TINY_MODEL).json()
    assert not report["ok"] and report["error_count"] == 1
    assert (report["errors"][0]["line"], report["errors"][0]["code"]) == (3, "unknown_role")
    assert report["stats"]["estimated_seconds"] is None  # an invalid file is not measured


def test_an_uploaded_file_is_checked_by_its_id_and_only_by_its_owner(tiny_server):
    file = upload(tiny_server.client())
    mine = check(tiny_server, file_id=file.id, model=TINY_MODEL)
    assert mine.status_code == 200 and mine.json()["ok"], mine.text
    other = check(tiny_server, key_for(tiny_server, "check-other"), file_id=file.id, model=TINY_MODEL)
    assert other.status_code == 404 and other.json()["error"]["param"] == "file_id"


def test_a_file_the_method_cannot_train_on_is_refused_in_the_report(tiny_server):
    preference = b"\n".join(json.dumps(PREFERENCE | {"n": i}).encode() for i in range(10))
    report = check(tiny_server, files={"file": ("dpo.jsonl", preference)}, model=TINY_MODEL).json()
    assert report["format"] == "preference" and not report["ok"]
    assert report["errors"][-1]["code"] == "format_not_for_method"
    assert "supervised fine-tuning needs chat or prompt/completion examples" in report["errors"][-1]["message"]


@pytest.mark.parametrize("fields, files, status, param", [
    ({}, {"file": ("marv.jsonl", MARV)}, 400, "model"),
    ({"model": "no-such-model"}, {"file": ("marv.jsonl", MARV)}, 404, "model"),
    ({"model": TINY_MODEL}, None, 400, "file"),
    ({"model": TINY_MODEL, "method": "unheard-of"}, {"file": ("marv.jsonl", MARV)}, 400, "method"),
])
def test_bad_checks_get_openais_error_envelope(tiny_server, fields, files, status, param):
    answer = check(tiny_server, files=files, **fields)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_body_that_is_not_a_form_is_a_400(tiny_server):
    answer = httpx.post(tiny_server.base_url.removesuffix("/v1") + "/tunery/files/check", content=b"{}",
                        headers={"Authorization": f"Bearer {tiny_server.client().api_key}",
                                 "Content-Type": "application/json"})
    assert answer.status_code == 400 and "multipart/form-data" in answer.json()["error"]["message"]


def test_checks_need_a_key(tiny_server):
    assert check(tiny_server, "sk-wrong", files={"file": ("marv.jsonl", MARV)}, model=TINY_MODEL).status_code == 401
