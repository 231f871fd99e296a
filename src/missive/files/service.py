"""The Files API's operations, scoped to a workspace (None: the operator's view of every workspace),
and `open`, through which the Messages pipeline reads a `{"type": "file", "file_id": ...}` source.

Metadata is in the store (store/files.py), bytes on disk (files/storage.py). An upload is written
and renamed into place before its row exists, and a delete removes the row before the bytes, so a
file that can be found can always be read. The app holds one `FileService` as `app.state.files`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio.to_thread
import sqlalchemy as sa

from missive import metrics
from missive.files.storage import DiskStorage, chunks, discard
from missive.files.upload import receive
from missive.settings import FileSettings
from missive.store import files as store
from missive.wire.errors import invalid, not_found
from missive.wire.files import (
    FILE_ID_PATTERN,
    BetaListQuery,
    FileRecord,
    ListQuery,
    beta_page,
    cursor_id,
    deleted_object,
    file_object,
    ga_page,
)
from missive.wire.ids import new_id
from missive.wire.times import now

log = logging.getLogger("missive.files")
_MAX_EXPIRY = 100 * 365 * 86400  # seconds: expires_in_seconds at most (a date Python can hold)


class FileMissing(Exception):
    """No such file for this workspace: never uploaded, deleted, expired, or another workspace's."""

    def __init__(self, file_id: str) -> None:
        super().__init__(f"no file with id '{file_id}'")
        self.file_id = file_id


@dataclass(frozen=True)
class StoredFile:
    """A file's metadata and its bytes, for a content block that names it."""

    id: str
    filename: str
    mime_type: str
    size_bytes: int
    data: bytes


def _missing(file_id: str) -> Exception:
    return not_found(f"file_id: no file with id '{file_id[:100]}'")


def _expiry(fields: dict[str, str]) -> timedelta | None:
    given = fields.get("expires_in_seconds")
    if given is None:
        return None
    value = given.strip()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= _MAX_EXPIRY:
        raise invalid(f"expires_in_seconds: expected a whole number of seconds from 1 to {_MAX_EXPIRY}, not {given[:40]!r}")
    return timedelta(seconds=int(value))


class FileService:
    def __init__(self, db: sa.Engine, settings: FileSettings, storage: DiskStorage) -> None:
        self.db = db
        self.settings = settings
        self.storage = storage

    async def start(self) -> None:
        await anyio.to_thread.run_sync(self.storage.prepare)

    # --- the API's operations ---------------------------------------------------------------------

    async def upload(
        self, workspace_id: str, key_id: str, content_type: str | None, declared_length: str | None,
        body: AsyncIterator[bytes],
    ) -> FileRecord:  # fmt: skip
        received = await receive(self.storage, content_type, declared_length, body, self.settings.max_bytes)
        try:
            expiry = _expiry(received.fields)
        except Exception:
            discard(received.temp, received.handle)
            raise
        created = now()
        record = FileRecord(
            id=new_id("file_"),
            workspace_id=workspace_id,
            key_id=key_id,
            filename=received.filename,
            mime_type=received.mime_type,
            size_bytes=received.size,
            sha256=received.sha256,
            created_at=created,
            expires_at=created + expiry if expiry else None,
        )

        def keep() -> None:
            try:
                self.storage.commit(received.temp, received.handle, record.id)
            except BaseException:
                discard(received.temp, received.handle)
                raise
            try:
                store.insert(self.db, record)
            except BaseException:
                self.storage.remove(record.id)
                raise

        await anyio.to_thread.run_sync(keep)
        metrics.FILES_UPLOADED.inc()
        metrics.FILE_BYTES_UPLOADED.inc(record.size_bytes)
        log.info("stored %s (%d bytes, %s) for workspace %s", record.id, record.size_bytes, record.mime_type, workspace_id)
        await self.sweep()
        return record

    async def find(self, workspace_id: str | None, file_id: str) -> FileRecord:
        found = await self._get(workspace_id, file_id)
        if found is None:
            raise _missing(file_id)
        return found

    def view(self, record: FileRecord, beta: bool) -> dict[str, Any]:
        return file_object(record, self.settings.downloadable, beta)

    async def list_beta(self, workspace_id: str | None, query: BetaListQuery) -> dict[str, Any]:
        if query.scope_id is not None:  # files uploaded here have no scope (a scope is a session that made them)
            return beta_page([], False)
        found, more = await anyio.to_thread.run_sync(
            lambda: store.page(self.db, workspace_id, now(), query.limit, query.after_id, query.before_id)
        )
        return beta_page([self.view(record, True) for record in found], more)

    async def list_ga(self, workspace_id: str | None, query: ListQuery) -> dict[str, Any]:
        if query.scope_id is not None:  # no file here has a scope, as in list_beta
            return ga_page([], False)
        if query.ids is not None:
            if query.page is not None or query.limit is not None:
                raise invalid("ids: cannot be combined with page or limit")
            found = await anyio.to_thread.run_sync(lambda: store.among(self.db, workspace_id, now(), query.ids or []))
            return ga_page([self.view(record, False) for record in found], False)
        after = cursor_id(query.page) if query.page is not None else None
        limit = query.limit or 20
        found, more = await anyio.to_thread.run_sync(lambda: store.page(self.db, workspace_id, now(), limit, after))
        return ga_page([self.view(record, False) for record in found], more)

    async def content(self, workspace_id: str | None, file_id: str) -> tuple[FileRecord, Iterator[bytes]]:
        """The file's bytes as a stream, opened now: a delete meanwhile does not cut the download short."""
        record = await self.find(workspace_id, file_id)
        if not self.settings.downloadable:
            raise invalid(
                f"file_id: file '{file_id}' was uploaded and cannot be downloaded: as on the Claude API, only "
                "files the server creates are downloadable (the operator can allow it: files.downloadable)"
            )
        try:
            handle = await anyio.to_thread.run_sync(self.storage.open, record.id)
        except FileNotFoundError:  # deleted between the two reads
            raise _missing(file_id) from None
        return record, chunks(handle)

    async def delete(self, workspace_id: str | None, file_id: str) -> dict[str, str]:
        record = await self.find(workspace_id, file_id)
        if not await anyio.to_thread.run_sync(self._remove, record.id):
            raise _missing(file_id)
        log.info("deleted %s (workspace %s)", record.id, record.workspace_id)
        return deleted_object(record.id)

    async def sweep(self) -> int:
        """Remove the files past their expiry, rows and bytes; how many were removed."""
        expired = await anyio.to_thread.run_sync(store.expired, self.db, now())
        removed = 0
        for file_id in expired:
            removed += await anyio.to_thread.run_sync(self._remove, file_id)
        return removed

    # --- for the Messages pipeline ----------------------------------------------------------------

    async def open(self, workspace_id: str, file_id: str) -> StoredFile:
        """The file and its bytes, or FileMissing (never uploaded, deleted, expired, another workspace's)."""
        record = await self._get(workspace_id, file_id)
        if record is None:
            raise FileMissing(file_id)
        try:
            data = await anyio.to_thread.run_sync(self.storage.read, record.id)
        except FileNotFoundError:
            raise FileMissing(file_id) from None
        return StoredFile(record.id, record.filename, record.mime_type, record.size_bytes, data)

    # ---------------------------------------------------------------------------------------------

    async def _get(self, workspace_id: str | None, file_id: str) -> FileRecord | None:
        if not FILE_ID_PATTERN.match(file_id):
            return None
        return await anyio.to_thread.run_sync(store.get, self.db, file_id, workspace_id, now())

    def _remove(self, file_id: str) -> bool:
        if not store.delete(self.db, file_id):
            return False
        self.storage.remove(file_id)
        metrics.FILES_DELETED.inc()
        return True
