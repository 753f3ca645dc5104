"""Uploads stream to disk as they arrive; one past the size limit is refused with 413 without
being kept, whether its size is declared up front or only found out while it streams."""

from __future__ import annotations

import io
import uuid

import httpx
import openai
import pytest

from tests.helpers import MARV, TEST_KEY

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def small_limit_server(start_module_server):
    """One server for the module (each start costs seconds): each test compares what is stored
    before and after its requests."""
    return start_module_server(env={"TUNERY_MAX_UPLOAD_BYTES": str(LIMIT)})


def stored(server) -> tuple[list[str], list]:
    """The files the API lists, and what lies in the data directory's files/ and tmp/ folders."""
    kept = [p for p in (server.data_dir / "files").iterdir()] + [p for p in (server.data_dir / "tmp").iterdir()
                                                                 if not p.name.endswith(".lock")]
    return [f.id for f in server.client().files.list().data], sorted(kept)


def test_an_upload_over_the_limit_is_refused_and_nothing_is_kept(small_limit_server):
    client = small_limit_server.client()
    before = stored(small_limit_server)
    big = MARV * (LIMIT // len(MARV) * 2)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.jsonl", io.BytesIO(big)), purpose="fine-tune")
    assert caught.value.status_code == 413 and caught.value.body["param"] == "file"
    checked = httpx.post(small_limit_server.base_url.removesuffix("/v1") + "/tunery/files/check",
                         data={"model": "SmolLM2-135M-Instruct"}, files={"file": ("big.jsonl", big)},
                         headers={"Authorization": f"Bearer {TEST_KEY}"})
    assert checked.status_code == 413 and checked.json()["error"]["param"] == "file"  # the check's limit too
    assert stored(small_limit_server) == before
    assert client.files.create(file=("marv.jsonl", io.BytesIO(MARV)), purpose="fine-tune").bytes == len(MARV)


def test_a_streamed_upload_without_a_length_is_cut_off_at_the_limit(small_limit_server):
    before = stored(small_limit_server)
    boundary = uuid.uuid4().hex

    def body():  # chunked: the server learns the size only by reading
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(3 * LIMIT // len(MARV)):
            yield MARV
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(f"{small_limit_server.base_url}/files", content=body(), timeout=60,
                          headers={"Authorization": f"Bearer {TEST_KEY}",
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert stored(small_limit_server) == before


def test_an_upload_without_a_file_part_or_purpose_is_a_400(small_limit_server):
    client = small_limit_server.client()
    before = stored(small_limit_server)
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("marv.jsonl", io.BytesIO(MARV)), purpose="nonsense")
    assert caught.value.body["param"] == "purpose"
    response = httpx.post(f"{small_limit_server.base_url}/files", data={"purpose": "fine-tune"},
                          files={"other": ("x.jsonl", b"{}")}, headers={"Authorization": f"Bearer {TEST_KEY}"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"
    assert stored(small_limit_server) == before


def form(boundary: str, parts: list[tuple[str, bytes]], *, close: bool = True) -> bytes:
    """A multipart body from (part headers, content) pairs."""
    body = b"".join(f"--{boundary}\r\n{headers}\r\n\r\n".encode("utf-8", "surrogateescape") + content + b"\r\n"
                    for headers, content in parts)
    return body + (f"--{boundary}--\r\n".encode() if close else b"")


FILE = 'Content-Disposition: form-data; name="file"; filename="marv.jsonl"'
PURPOSE = ('Content-Disposition: form-data; name="purpose"', b"fine-tune")


@pytest.mark.parametrize("case", ["wrong boundary", "garbage", "long filename", "long part header",
                                  "non-utf8 filename", "two file parts", "no closing boundary"])
def test_a_malformed_form_is_a_400_and_nothing_is_kept(small_limit_server, case):
    before = stored(small_limit_server)
    boundary = uuid.uuid4().hex
    content_type = f"multipart/form-data; boundary={boundary}"
    bodies = {
        "wrong boundary": form("another" + boundary, [PURPOSE, (FILE, MARV)]),
        "garbage": bytes(range(256)) * 40,
        "long filename": form(boundary, [PURPOSE, (FILE.replace("marv", "m" * 5000), MARV)]),
        "long part header": form(boundary, [PURPOSE, (FILE + "\r\nX-Padding: " + "x" * 20_000, MARV)]),
        "non-utf8 filename": form(boundary, [PURPOSE, (FILE.replace("marv", "\udcff\udcfe"), MARV)]),
        "two file parts": form(boundary, [PURPOSE, (FILE, MARV), (FILE, MARV)]),
        "no closing boundary": form(boundary, [PURPOSE, (FILE, MARV)], close=False),
    }
    response = httpx.post(f"{small_limit_server.base_url}/files", content=bodies[case],
                          headers={"Authorization": f"Bearer {TEST_KEY}", "Content-Type": content_type})
    assert response.status_code == 400, (case, response.status_code, response.text)
    assert response.json()["error"]["param"] == "file" and response.json()["error"]["type"] == "invalid_request_error"
    assert stored(small_limit_server) == before


def test_many_fields_beside_the_file_count_toward_the_limit(small_limit_server):
    before = stored(small_limit_server)
    boundary = uuid.uuid4().hex

    def body():  # thousands of small non-file fields, chunked: no length to refuse it by
        yield form(boundary, [PURPOSE], close=False)
        for i in range(20_000):
            yield form(boundary, [(f'Content-Disposition: form-data; name="f{i}"', b"x" * 1000)], close=False)
        yield form(boundary, [(FILE, MARV)])

    response = httpx.post(f"{small_limit_server.base_url}/files", content=body(), timeout=60,
                          headers={"Authorization": f"Bearer {TEST_KEY}",
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and stored(small_limit_server) == before, response.text


def test_a_json_body_over_the_limit_is_a_413(small_limit_server):
    from tunery.api.app import MAX_BODY_BYTES

    huge = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * MAX_BODY_BYTES + b'"}]}'
    headers = {"Authorization": f"Bearer {TEST_KEY}", "Content-Type": "application/json"}
    declared = httpx.post(f"{small_limit_server.base_url}/chat/completions", content=huge, headers=headers)
    streamed = httpx.post(f"{small_limit_server.base_url}/chat/completions", headers=headers, timeout=60,
                          content=(huge[i:i + (1 << 20)] for i in range(0, len(huge), 1 << 20)))  # chunked
    for response in (declared, streamed):
        assert response.status_code == 413 and response.json()["error"]["type"] == "invalid_request_error", response.text
