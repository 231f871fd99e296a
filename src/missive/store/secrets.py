"""Secrets of one installation, kept as files in the data directory."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

THINKING_KEY_FILE = "thinking.key"
KEY_BYTES = 32


def thinking_key(data_dir: Path) -> bytes:
    """The key that signs thinking blocks: read from `data_dir/thinking.key`, made on first use.

    The file holds the key in hex and is readable by its owner only (0600). It is written under a
    temporary name and linked into place, so two processes starting at once agree on one key.
    """
    path = data_dir / THINKING_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        temporary = data_dir / f".{THINKING_KEY_FILE}.{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as file:
                os.fchmod(file.fileno(), 0o600)
                file.write(secrets.token_bytes(KEY_BYTES).hex() + "\n")
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:  # another process made it first: use theirs
                pass
        finally:
            temporary.unlink()
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise RuntimeError(f"{path} must hold a {KEY_BYTES}-byte key in hex; remove it to make a new one")
    return key
