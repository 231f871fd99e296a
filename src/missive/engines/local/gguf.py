"""The chat template inside a GGUF file, read from its header without loading the model.

The API process describes each model (its card: whether it thinks) before the engine process loads
it, and whether a model thinks is read from its chat template. A GGUF header is a list of typed
key/value pairs; this reads them until `tokenizer.chat_template`, skipping the rest (the vocabulary
arrays) by their sizes.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> bytes
_STRING, _ARRAY = 8, 9


def _u32(f: BinaryIO) -> int:
    return struct.unpack("<I", f.read(4))[0]


def _u64(f: BinaryIO) -> int:
    return struct.unpack("<Q", f.read(8))[0]


def _string(f: BinaryIO) -> bytes:
    return f.read(_u64(f))


def _skip(f: BinaryIO, kind: int) -> None:
    if kind in _FIXED:
        f.seek(_FIXED[kind], 1)
    elif kind == _STRING:
        f.seek(_u64(f), 1)
    elif kind == _ARRAY:
        item, count = _u32(f), _u64(f)
        if item in _FIXED:
            f.seek(_FIXED[item] * count, 1)
        else:
            for _ in range(count):
                _skip(f, item)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def chat_template(path: Path) -> str | None:
    """The GGUF's chat template; None if it has none. Raises ValueError if the file is no GGUF (v2 or v3)."""
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        if _u32(f) not in (2, 3):
            raise ValueError(f"{path}: unsupported GGUF version")
        _u64(f)  # tensors
        for _ in range(_u64(f)):
            key, kind = _string(f).decode(errors="replace"), _u32(f)
            if key == CHAT_TEMPLATE_KEY and kind == _STRING:
                return _string(f).decode(errors="replace")
            _skip(f, kind)
    return None
