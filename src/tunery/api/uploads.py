"""Receiving a multipart/form-data upload as it streams in: the file part's bytes go straight to
a BlobWriter (never whole into memory), small fields are collected, and an upload past the limit
is refused (413) the moment it passes it, or before reading when Content-Length says so; the
whole body counts (file, fields, part headers), not only the file. A body that is no well-formed
form (a broken boundary, an oversized part header or file name, two file parts, no closing
boundary) is a 400, and nothing of it is kept."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from tunery.errors import InvalidRequest, TooLarge
from tunery.storage.blobs import BlobTooLarge, BlobWriter

MAX_FIELD_BYTES = 64 * 1024  # a form field other than the file (purpose)
FORM_OVERHEAD_BYTES = 64 * 1024  # boundaries, part headers and small fields around the file, all together
MAX_PART_HEADER_BYTES = 8 * 1024  # one part's headers
MAX_FILENAME_CHARS = 255


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
    state = {"ended": False, "overhead": 0}  # the closing boundary seen; bytes of everything but the file

    def bad(message: str):
        return InvalidRequest(f"The multipart body is not a well-formed form: {message}", param="file")

    def count_overhead(n: int) -> None:
        state["overhead"] += n
        if state["overhead"] > FORM_OVERHEAD_BYTES:
            raise too_large

    def on_part_begin() -> None:
        part.clear()
        part.update(headers={}, header_field=b"", header_value=b"", value=bytearray(), header_bytes=0)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_bytes(end - start)
        part["header_field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_bytes(end - start)
        part["header_value"] += data[start:end]

    def header_bytes(n: int) -> None:
        part["header_bytes"] += n
        if part["header_bytes"] > MAX_PART_HEADER_BYTES:
            raise bad(f"a part's headers are longer than {MAX_PART_HEADER_BYTES} bytes.")
        count_overhead(n)

    def on_header_end() -> None:
        part["headers"][part["header_field"].lower()] = part["header_value"]
        part["header_field"] = part["header_value"] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        try:
            part["name"] = disposition.get(b"name", b"").decode()
            filename = disposition.get(b"filename", b"upload").decode()
        except UnicodeDecodeError:
            raise bad("a part's name or file name is not UTF-8.") from None
        if part["name"] == "file":
            if form.filename is not None:
                raise bad("it has two 'file' parts; send one file per upload.")
            if len(filename) > MAX_FILENAME_CHARS:
                raise bad(f"the file name is longer than {MAX_FILENAME_CHARS} characters.")
            form.filename = filename

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("name") == "file":
            writer.write(data[start:end])  # BlobTooLarge past the limit
            return
        count_overhead(end - start)
        if len(part["value"]) + end - start <= MAX_FIELD_BYTES:
            part["value"] += data[start:end]

    def on_part_end() -> None:
        if part.get("name") and part["name"] != "file":
            form.fields[part["name"]] = part["value"].decode("utf-8", "replace")

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(options[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_end": on_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BlobTooLarge:
        raise too_large from None
    except MultipartParseError as exc:
        raise bad(f"{exc}.") from None
    if not state["ended"]:
        raise bad("it ends before its closing boundary (a cut-short upload?).")
    return form
