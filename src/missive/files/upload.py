"""An upload's multipart/form-data body, parsed as it streams: the `file` part goes to a temp file as
it arrives (never whole in memory), counted, hashed and refused with 413 once past the size limit.

The body has one part named `file` (with a filename) and may have `expires_in_seconds`; any other
part, a second file, a truncated or malformed body is a 400 that says which.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from missive.files.storage import DiskStorage, discard
from missive.wire.errors import ApiError, invalid
from missive.wire.files import check_filename

FIELDS = ("expires_in_seconds",)  # the form's fields besides `file`
_FIELD_BYTES = 1024  # a field's value at most
_ENVELOPE = 1024 * 1024  # multipart framing and fields allowed beyond the file's own bytes
_FLUSH = 1024 * 1024  # bytes gathered before a write to disk (in a thread)
_HEAD = 16  # leading bytes kept to recognise the format


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"Request exceeds the maximum allowed number of bytes: a file may be at most {max_bytes} bytes.")


@dataclass
class Received:
    """A complete upload in a temp file, not yet in its place (storage.commit)."""

    filename: str
    mime_type: str
    size: int
    sha256: str
    temp: Path
    handle: BinaryIO
    fields: dict[str, str]


@dataclass
class _Part:
    name: str | None = None
    filename: str | None = None
    content_type: str | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    value: bytearray = field(default_factory=bytearray)


class _Form:
    """The parser's callbacks: they only record; the caller writes to disk between chunks."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.part = _Part()
        self.field_name = b""
        self.field_value = b""
        self.file: _Part | None = None
        self.fields: dict[str, str] = {}
        self.pending: list[bytes] = []
        self.size = 0
        self.head = b""
        self.ended = False
        self.fault: ApiError | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._add("field_name", data[start:end]),
            "on_header_value": lambda data, start, end: self._add("field_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _begin(self) -> None:
        self.part = _Part()

    def _header_end(self) -> None:
        self.part.headers.append((self.field_name.lower(), self.field_value))
        self.field_name = self.field_value = b""

    def _headers_finished(self) -> None:
        part = self.part
        headers = dict(part.headers)
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        part.name = name.decode("utf-8", "replace") if name is not None else None
        filename = options.get(b"filename")
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        declared = headers.get(b"content-type")
        part.content_type = declared.decode("latin-1").strip() if declared else None
        if part.name == "file":
            if self.file is not None:
                self._refuse(invalid("file: one file may be uploaded per request, not several"))
            elif part.filename is None:
                self._refuse(invalid("file: expected a file (a form part with a filename), not a plain field"))
            else:
                self.file = part
        elif not part.name:
            self._refuse(invalid("file: a form part without a name; the upload takes a part named `file`"))
        elif part.name not in FIELDS:
            self._refuse(invalid(f"{part.name}: unexpected form field; the upload takes `file` and `expires_in_seconds`"))

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.fault is not None:
            return
        piece = data[start:end]
        if self.part is self.file:
            self.size += len(piece)
            if self.size > self.max_bytes:
                self._refuse(too_large(self.max_bytes))
                return
            if len(self.head) < _HEAD:
                self.head += piece[: _HEAD - len(self.head)]
            self.pending.append(piece)
        else:
            self.part.value += piece
            if len(self.part.value) > _FIELD_BYTES:
                self._refuse(invalid(f"{self.part.name}: the field's value is too long"))

    def _part_end(self) -> None:
        if self.part is not self.file and self.part.name in FIELDS:
            if self.part.name in self.fields:
                self._refuse(invalid(f"{self.part.name}: given more than once"))
            self.fields[self.part.name] = self.part.value.decode("utf-8", "replace")

    def _end(self) -> None:
        self.ended = True

    def _refuse(self, error: ApiError) -> None:
        self.fault = self.fault or error


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type or "")
    boundary = {name.lower(): value for name, value in options.items()}.get(b"boundary")  # names ignore case
    if kind.lower() != b"multipart/form-data" or not boundary:
        shown = content_type[:100] if content_type else "none"
        raise invalid(f"Content-Type: expected multipart/form-data with a boundary, not {shown!r}")
    return boundary


def media_type(declared: str | None, head: bytes, filename: str) -> str:
    """The file's MIME type: the part's own when it says one, else what the bytes or the name show."""
    if declared:
        kind = parse_options_header(declared)[0].decode("latin-1")
        if kind and kind != "application/octet-stream" and "/" in kind:
            return kind
    sniffed = _sniff(head)
    return sniffed or mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


async def receive(
    storage: DiskStorage, content_type: str | None, declared_length: str | None, body: AsyncIterator[bytes],
    max_bytes: int,
) -> Received:  # fmt: skip
    """Parse the body into a temp file; on any refusal the temp file is removed."""
    boundary = boundary_of(content_type)
    limit = max_bytes + _ENVELOPE
    if declared_length and declared_length.isascii() and declared_length.isdigit() and int(declared_length) > limit:
        raise too_large(max_bytes)
    form = _Form(max_bytes)
    try:
        parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
    except FormParserError as exc:
        raise invalid(f"Content-Type: unusable multipart boundary ({exc})") from None
    temp, handle = await anyio.to_thread.run_sync(storage.temp)
    digest = hashlib.sha256()
    read = 0

    def flush() -> None:
        for piece in form.pending:
            handle.write(piece)
            digest.update(piece)
        form.pending.clear()

    try:
        async for chunk in body:
            read += len(chunk)
            if read > limit:
                raise too_large(max_bytes)
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise invalid(f"Malformed multipart/form-data body: {exc}") from None
            if form.fault is not None:
                raise form.fault
            if sum(map(len, form.pending)) >= _FLUSH:
                await anyio.to_thread.run_sync(flush)
        parser.finalize()
        if form.fault is not None:
            raise form.fault
        if not form.ended:
            raise invalid("Malformed multipart/form-data body: it ends before its closing boundary")
        if form.file is None or form.file.filename is None:
            raise invalid("file: Field required (a form part named `file` holding the file)")
        filename = check_filename(form.file.filename)
        await anyio.to_thread.run_sync(flush)
    except BaseException:
        discard(temp, handle)  # quick, and it must run even when the request is cancelled
        raise
    return Received(
        filename=filename,
        mime_type=media_type(form.file.content_type, form.head, filename),
        size=form.size,
        sha256=digest.hexdigest(),
        temp=temp,
        handle=handle,
        fields=form.fields,
    )
