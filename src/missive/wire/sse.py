"""Server-sent event framing: `event:` line, `data:` line, blank line."""

import json
from typing import Any

PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def frame(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()
