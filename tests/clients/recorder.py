"""A recording proxy between a real client and Missive.

Clients hide some failures: Claude Code quietly re-sends a refused request without the refused field,
and falls back from a broken stream to a plain request. So the client tests do not trust the client's
own result alone; they read every exchange here. One server plays two parts:

- a reverse proxy: requests in origin form (`POST /v1/messages`) go to Missive, streamed through
  unchanged, and each one is recorded with its headers, its JSON body, the status and, for errors,
  the response body;
- a forward proxy that refuses: point `HTTPS_PROXY`/`HTTP_PROXY` at it and every attempt to reach
  another host (`CONNECT host:443`, or an absolute URL) is recorded in `foreign` and refused with a 403.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade", "host"}


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # the parsed JSON body, or None
    status: int = 0
    error: Any = None  # the parsed error body of a 4xx/5xx
    response_headers: dict[str, str] = field(default_factory=dict)  # lower-case names

    @property
    def betas(self) -> list[str]:
        return [b.strip() for b in self.headers.get("anthropic-beta", "").split(",") if b.strip()]


@dataclass
class Recorder:
    upstream: str  # Missive's base URL
    exchanges: list[Exchange] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # hosts a client tried to reach besides Missive

    def start(self) -> None:
        recorder = self

        class Handler(_Handler):
            owner = recorder

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def clear(self) -> None:
        self.exchanges.clear()
        self.foreign.clear()

    def requests(self, path: str) -> list[Exchange]:
        """The exchanges for one path, whatever their query string."""
        return [e for e in self.exchanges if urlsplit(e.path).path == path]

    def messages(self) -> list[Exchange]:
        return self.requests("/v1/messages")

    def refused(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.status >= 400]


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: Recorder
    protocol_version = "HTTP/1.0"  # each response ends by closing the connection: no chunking to redo

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_CONNECT(self) -> None:
        self._refuse(self.path)

    def _relay(self) -> None:
        if not self.path.startswith("/"):  # absolute form: a proxy request for some other host
            target = urlsplit(self.path)
            if f"{target.scheme}://{target.netloc}" != self.owner.url:
                self._refuse(target.netloc)
                return
            self.path = target.path + (f"?{target.query}" if target.query else "")
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        exchange = Exchange(self.command, self.path, headers, body)
        self.owner.exchanges.append(exchange)
        forward = {k: v for k, v in headers.items() if k not in HOP_BY_HOP and k != "content-length"}
        with httpx.Client(base_url=self.owner.upstream, timeout=httpx.Timeout(600, connect=5)) as upstream:
            with upstream.stream(self.command, self.path, content=raw, headers=forward) as response:
                exchange.status = response.status_code
                exchange.response_headers = {k.lower(): v for k, v in response.headers.items()}
                self.send_response(response.status_code)
                for name, value in response.headers.multi_items():
                    if name.lower() not in HOP_BY_HOP and name.lower() not in ("content-length", "content-encoding"):
                        self.send_header(name, value)
                self.end_headers()
                if response.status_code >= 400:
                    data = response.read()
                    try:
                        exchange.error = json.loads(data)
                    except ValueError:
                        exchange.error = data.decode(errors="replace")
                    self.wfile.write(data)
                    return
                for chunk in response.iter_bytes():
                    self.wfile.write(chunk)
                    self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _relay

    def _refuse(self, host: str) -> None:
        self.owner.foreign.append(host)
        self.send_response(403)
        self.send_header("content-length", "0")
        self.end_headers()
