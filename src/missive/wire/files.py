"""The Files API on the wire: `FileMetadata`, the deleted-file object, list queries and pages.

Two shapes, as on the Claude API: requests with the `files-api-2025-04-14` beta (what the SDKs'
`client.beta.files` sends) get the beta shape, pages of `has_more`/`first_id`/`last_id` walked with
`after_id`/`before_id`; requests without it get the generally available shape, in which a file also
carries `expires_at` and a page is `data` with an opaque `next_page` cursor, passed back as `page`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from missive.wire.errors import invalid
from missive.wire.times import utc

FILES_BETA = "files-api-2025-04-14"
FILE_ID_PATTERN = re.compile(r"^file_[A-Za-z0-9]{1,64}$")
MAX_FILENAME = 255
# Characters the Claude API refuses in a filename: < > : " | ? * \ / and the control characters 0-31.
_FORBIDDEN = re.compile(r'[<>:"|?*\\/\x00-\x1f]')
_PAGE_PREFIX = "page_"
MAX_IDS = 100


@dataclass(frozen=True)
class FileRecord:
    """A stored file's metadata; its bytes are on disk under its id (files/storage.py)."""

    id: str
    workspace_id: str
    key_id: str
    filename: str
    mime_type: str
    size_bytes: int
    sha256: str
    created_at: datetime
    expires_at: datetime | None = None


def _moment(value: datetime | None) -> str | None:
    value = utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def file_object(record: FileRecord, downloadable: bool, beta: bool) -> dict[str, Any]:
    """`FileMetadata`. Files uploaded here have no `scope` (a scope is a session that made the file)."""
    found: dict[str, Any] = {
        "type": "file",
        "id": record.id,
        "filename": record.filename,
        "mime_type": record.mime_type,
        "size_bytes": record.size_bytes,
        "created_at": _moment(record.created_at),
        "downloadable": downloadable,
    }
    if not beta:
        found["expires_at"] = _moment(record.expires_at)
    return found


def deleted_object(file_id: str) -> dict[str, str]:
    return {"id": file_id, "type": "file_deleted"}


def check_filename(filename: str) -> str:
    """The filename as given, or the 400 saying why the API would refuse it."""
    if not 1 <= len(filename) <= MAX_FILENAME:
        raise invalid(f"file: the filename must be 1 to {MAX_FILENAME} characters long, not {len(filename)}")
    if _FORBIDDEN.search(filename):
        raise invalid(
            f"file: invalid filename {filename!r}: a filename may not contain < > : \" | ? * \\ / "
            "or control characters"
        )
    return filename


# --- list queries -------------------------------------------------------------------------------------


class BetaListQuery(BaseModel):
    """The beta's list query (`beta=true` and other noise ignored)."""

    model_config = ConfigDict(extra="ignore")
    limit: int = Field(default=20, ge=1, le=1000)
    after_id: str | None = None
    before_id: str | None = None
    scope_id: str | None = None


class ListQuery(BaseModel):
    """The generally available list query: a `page` cursor, or up to 100 `ids`."""

    model_config = ConfigDict(extra="ignore")
    limit: int | None = Field(default=None, ge=1, le=1000)
    page: str | None = None
    ids: list[str] | None = None
    scope_id: str | None = None  # a filter here too (Python SDK 1.x sends it without the beta header)

    @field_validator("ids")
    @classmethod
    def _few_ids(cls, ids: list[str] | None) -> list[str] | None:
        if ids is not None:
            ids = list(dict.fromkeys(ids))
            if len(ids) > MAX_IDS:
                raise ValueError(f"at most {MAX_IDS} ids may be given, not {len(ids)}")
        return ids


def page_cursor(last_id: str) -> str:
    return _PAGE_PREFIX + base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def cursor_id(page: str) -> str:
    """The file id a `next_page` cursor stands for, or the 400 naming `page`."""
    body = page.removeprefix(_PAGE_PREFIX)
    try:
        found = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        found = ""
    if not page.startswith(_PAGE_PREFIX) or not FILE_ID_PATTERN.match(found):
        raise invalid(f"page: invalid page cursor {page[:100]!r}; pass back the next_page of a previous list")
    return found


def beta_page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "data": items,
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }


def ga_page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"data": items, "next_page": page_cursor(items[-1]["id"]) if has_more and items else None}
