"""The engine process's messages to the API process: pickles, each behind its length, on their own pipe.

The API process reads them on its event loop (`loop.add_reader`), not in a thread blocked in
`Connection.recv`: a step's events then wake the loop once, instead of waking a reader thread that
wakes the loop through its self-pipe. `Connection`'s own framing is private to multiprocessing, so
this direction has one of its own; the other direction (API -> engine) stays `Connection.send`, on a
pipe of its own (the loop makes the pipe it reads non-blocking).
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

HEADER = struct.Struct("!I")


def encode(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def write(fd: int, data: bytes) -> None:
    """All of `data` to a blocking file descriptor."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Reader:
    """Whole messages out of the bytes as they arrive, in any cut."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages, start = [], 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if end > len(buffer):
                break
            messages.append(pickle.loads(buffer[start + HEADER.size : end]))
            start = end
        del buffer[:start]
        return messages
