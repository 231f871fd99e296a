"""The HTTP/1.1 protocol Missive serves with: uvicorn's h11 protocol, except that a request which is not
valid HTTP (two Content-Lengths, a bad chunk size, a header line without a colon, NUL bytes, an HTTP/0.9
request line) gets an Anthropic error with a `request-id`, where uvicorn answers plain text."""

from __future__ import annotations

import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from missive.wire.errors import error_body
from missive.wire.ids import new_id

log = logging.getLogger("missive.server")
MESSAGE = "Invalid HTTP request: the request line, a header or the body's framing is malformed."


class MissiveH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn when h11 refuses what the client sent; the connection is closed after."""
        request_id = new_id("req_")
        log.info("%s malformed HTTP request -> 400 invalid_request_error", request_id)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # else a response is under way: just close
            body = json.dumps(error_body("invalid_request_error", MESSAGE, request_id)).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"request-id", request_id.encode()),
                (b"x-should-retry", b"false"),
                (b"connection", b"close"),
            ]
            response = h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
            for event in (response, h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        self.transport.close()
        if self.cycle is not None and not self.cycle.response_complete:  # the app is reading a bad body:
            self.cycle.disconnected = True  # it sees the client gone, as after connection_lost, and sends nothing
            self.cycle.message_event.set()
