"""Files' bytes on disk: `<root>/<last two characters of the id>/<id>`, written whole or not at all.

An upload streams into `<root>/tmp/` and is renamed into place once complete and synced, so a reader
never sees half a file. Synchronous: run these in a thread. Paths are built only from ids that match
the file-id pattern, so no id can name a path outside the root.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from missive.wire.files import FILE_ID_PATTERN
from missive.wire.ids import new_id

_CHUNK = 1024 * 1024
_STALE_TEMP = 24 * 3600.0  # seconds: a temp file this old is left from a crash (another front end may share the root)


class DiskStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = root / "tmp"

    def prepare(self) -> None:
        """Create the directories and remove temp files that a crash left behind."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - _STALE_TEMP
        for leftover in self.temp_dir.glob("*.part"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()

    def path(self, file_id: str) -> Path:
        if not FILE_ID_PATTERN.match(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        return self.root / file_id[-2:] / file_id

    def temp(self) -> tuple[Path, BinaryIO]:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        path = self.temp_dir / f"{new_id('up_')}.part"
        return path, path.open("xb")

    def commit(self, temp: Path, handle: BinaryIO, file_id: str) -> None:
        """Sync the finished temp file and rename it to the file's place (atomic on one filesystem)."""
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        final = self.path(file_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)

    def read(self, file_id: str) -> bytes:
        return self.path(file_id).read_bytes()

    def open(self, file_id: str) -> BinaryIO:
        """An open handle: it keeps reading the bytes even if the file is deleted meanwhile."""
        return self.path(file_id).open("rb")

    def remove(self, file_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(file_id).unlink()


def discard(temp: Path, handle: BinaryIO) -> None:
    handle.close()
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()


def chunks(handle: BinaryIO) -> Iterator[bytes]:
    """The handle's bytes a chunk at a time, closing it at the end (run by Starlette in a thread)."""
    try:
        while chunk := handle.read(_CHUNK):
            yield chunk
    finally:
        handle.close()
