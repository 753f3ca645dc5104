"""Receiving a multipart/form-data upload as it streams in: the file part's bytes go straight to
a BlobWriter (never whole into memory), small fields are collected, and an upload past the limit
is refused (413) the moment it passes it, or before reading when Content-Length says so."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from tunery.errors import InvalidRequest, TooLarge
from tunery.storage.blobs import BlobTooLarge, BlobWriter

MAX_FIELD_BYTES = 64 * 1024  # a form field other than the file (purpose)
FORM_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and small fields around the file


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None  # of the part named "file"


async def receive_upload(request: Request, writer: BlobWriter, too_large: TooLarge, *,
                         expected: str = "a 'file' part and a 'purpose' field") -> ReceivedForm:
    """expected: what the endpoint's form holds, for the error when the body is no such form."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise InvalidRequest(f"Send multipart/form-data with {expected}.", param="file")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and writer.max_bytes is not None and \
            int(declared) > writer.max_bytes + FORM_OVERHEAD_BYTES:
        raise too_large
    form = ReceivedForm()
    part: dict = {}

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, header_field=b"", header_value=b"", value=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["header_field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["header_value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][part["header_field"].lower()] = part["header_value"]
        part["header_field"] = part["header_value"] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        part["name"] = disposition.get(b"name", b"").decode()
        if part["name"] == "file":
            form.filename = disposition.get(b"filename", b"upload").decode()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("name") == "file":
            writer.write(data[start:end])  # BlobTooLarge past the limit
        elif len(part["value"]) + end - start <= MAX_FIELD_BYTES:
            part["value"] += data[start:end]

    def on_part_end() -> None:
        if part.get("name") and part["name"] != "file":
            form.fields[part["name"]] = part["value"].decode("utf-8", "replace")

    parser = MultipartParser(options[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BlobTooLarge:
        raise too_large from None
    return form
