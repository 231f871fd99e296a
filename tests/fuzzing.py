"""Generated bad and borderline requests for every route, and what every answer to them must be.

Shared by tests/test_fuzz.py (a few hundred requests, in the suite) and bench/fuzz.py (a long run).
A request is a `Case`: method, path, query string, headers and body bytes, drawn by hypothesis
strategies that start from a plausible request and break it: wrong types for fields, huge, negative
and NaN numbers, deep nesting, unknown fields, broken JSON, non-UTF-8 bytes, wrong content types,
bad `anthropic-version`, `anthropic-beta` and auth headers, odd query strings and path ids.

Whatever the request, the answer (`problems`) must be:
- no 5xx, except a 529 `overloaded_error` with `retry-after`, and no `api_error` inside a stream;
- an error body of the Anthropic shape, `{"type": "error", "error": {"type", "message"},
  "request_id"}`, whose type matches the status and whose `request_id` is the header's;
- a `request-id` header on every response;
- an answer at all: no hang past the client's timeout.

Generation stays cheap: a request that could be valid asks for `max_tokens` 1 to 4, or streams (the
client reads a stream for a few seconds at most, then closes it, which cancels the generation).
The Admin API's writes only touch a workspace and a key made for the fuzzer (`Targets`), so that
other tests sharing the server keep their keys, workspaces and limits. Message batches run for real:
their requests never stream and ask for `max_tokens` 4 at most, and the batch the id cases aim at is
the fuzzer's own (made, and run to its end, by `prepare`).
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import strategies as st

# --- what an answer must be -----------------------------------------------------------------------

ERROR_TYPES = {  # status -> the Anthropic error type (spec §7)
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STREAM_ERROR_TYPES = {"overloaded_error", "rate_limit_error", "invalid_request_error", "timeout_error"}
STREAM_SECONDS = 5.0  # a stream is read this long at most, then closed (a cancel)
MAX_BODY = 16 * 1024 * 1024  # a response body is read this far at most


@dataclass(frozen=True)
class Raw:
    """Bytes spliced into a JSON document as they are: deep nesting, `1e400`, broken literals."""

    data: bytes

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 60 else self.data[:40] + b"..." + self.data[-10:]
        return f"Raw({shown!r}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class Case:
    route: str  # what the counts are kept by, e.g. "POST /v1/messages (stream)"
    method: str
    path: str  # already percent-encoded where it needs to be
    query: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes | None = None

    @property
    def target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    def show(self, limit: int = 1500) -> str:
        def clip(data: bytes | str, size: int) -> str:
            text = repr(data)
            return text if len(text) <= size else f"{text[: size - 60]} ... ({len(data)} bytes in all)"

        lines = [f"{self.method} {clip(self.target, 400)}"]
        lines += [f"  {name.decode('latin-1')}: {clip(value, 200)}" for name, value in self.headers]
        if self.body is not None:
            lines.append(f"  body: {clip(self.body, limit)}")
        return "\n".join(lines)


@dataclass
class Outcome:
    case: Case
    status: int | None = None
    request_id: str | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    detail: str = ""  # the start of the body, or the stream's events
    log: str = ""  # the server's log lines for a request with problems
    unsent: str = ""  # why the HTTP client refused to send the case, if it did

    def report(self) -> str:
        parts = [
            f"{self.case.route}: status {self.status}, request-id {self.request_id}, {self.seconds:.2f} s",
            *(f"  problem: {problem}" for problem in self.problems),
            self.case.show(),
            f"  response: {self.detail[:1500]}",
        ]
        if self.log:
            parts.append("  server log:\n" + "\n".join(f"    {line}" for line in self.log.splitlines()))
        return "\n".join(parts)


def error_problems(status: int, body: bytes, header_id: str | None) -> list[str]:
    """What is wrong with an error response's body (an empty list when it has the Anthropic shape)."""
    try:
        error = json.loads(body)
    except ValueError:
        return [f"error body is not JSON: {body[:200]!r}"]
    if not isinstance(error, dict) or error.get("type") != "error" or not isinstance(error.get("error"), dict):
        return [f"error body is not the Anthropic shape: {body[:300]!r}"]
    problems = []
    inner = error["error"]
    if not isinstance(inner.get("type"), str) or not isinstance(inner.get("message"), str) or not inner["message"]:
        problems.append(f"error.type and error.message must be strings: {body[:300]!r}")
    expected = ERROR_TYPES.get(status)
    if expected is None:
        problems.append(f"status {status} is not one the Anthropic API uses")
    elif inner.get("type") != expected and not (status == 400 and inner.get("type") == "billing_error"):
        problems.append(f"status {status} with error type {inner.get('type')!r}, expected {expected!r}")
    if "request_id" not in error:
        problems.append("error body has no request_id")
    elif error["request_id"] != header_id:
        problems.append(f"error body request_id {error['request_id']!r} differs from the header {header_id!r}")
    return problems


def stream_problems(frames: list[bytes], complete: bool) -> list[str]:
    """What is wrong with the SSE frames of a 200 stream."""
    problems: list[str] = []
    names: list[str] = []
    for raw in frames:
        fields = dict(line.split(b": ", 1) for line in raw.split(b"\n") if b": " in line)
        name, data = fields.get(b"event", b"").decode(), fields.get(b"data", b"")
        try:
            event = json.loads(data)
        except ValueError:
            problems.append(f"event {name!r} has data that is not JSON: {data[:200]!r}")
            continue
        if not isinstance(event, dict) or event.get("type") != name:
            kind = event.get("type") if isinstance(event, dict) else type(event).__name__
            problems.append(f"event {name!r} with data of type {kind!r}")
            continue
        names.append(name)
        if name == "error":
            inner = event.get("error")
            if not isinstance(inner, dict) or not isinstance(inner.get("message"), str):
                problems.append(f"error event is not the Anthropic shape: {data[:300]!r}")
            elif inner.get("type") not in STREAM_ERROR_TYPES:
                problems.append(f"error inside the stream: {data[:300]!r}")
    if names and names[0] != "message_start":
        problems.append(f"the stream starts with {names[0]!r}, not message_start")
    if complete and (not names or names[-1] not in ("message_stop", "error")):
        problems.append(f"the stream ended after {names[-1] if names else 'nothing'!r}")
    return problems


# --- sending ------------------------------------------------------------------------------------


class Fuzzer:
    """Sends cases to one server and checks each answer. One per thread."""

    def __init__(self, base_url: str, log_path: str | os.PathLike[str] | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.log_path = log_path
        self.timeout = timeout
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0))

    def close(self) -> None:
        self.client.close()

    def _log_size(self) -> int:
        return os.path.getsize(self.log_path) if self.log_path else 0

    def _log_since(self, offset: int, request_id: str | None) -> str:
        """The server's log records written since `offset` that name this request or hold a traceback."""
        if not self.log_path:
            return ""
        time.sleep(0.2)  # the engine process may log after the response
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            text = log.read(1_000_000).decode("utf-8", "replace")
        records = re.split(r"\n(?=(?:\d{4}-\d\d-\d\d[ T])?\d\d:\d\d:\d\d)", text)  # one per log line, tracebacks kept
        kept = [r for r in records if (request_id and request_id in r) or "Traceback" in r or "Fatal" in r]
        excerpt = "\n".join(kept)
        return excerpt if len(excerpt) < 12_000 else excerpt[:6000] + "\n...\n" + excerpt[-6000:]

    def send(self, case: Case) -> Outcome:
        outcome = Outcome(case)
        offset = self._log_size()
        started = time.monotonic()
        try:
            request = self.client.build_request(
                case.method, self.base_url + case.target, headers=list(case.headers), content=case.body
            )
            response = self.client.send(request, stream=True)
            try:
                self._read(response, outcome)
            finally:
                response.close()
        except httpx.LocalProtocolError as exc:  # the client would not send it: not the server's doing
            outcome.unsent = str(exc)
        except httpx.TimeoutException as exc:
            outcome.problems.append(f"no answer within {self.timeout:.0f} s (a hang): {type(exc).__name__}")
        except httpx.HTTPError as exc:
            outcome.problems.append(f"transport error: {type(exc).__name__}: {exc}")
        outcome.seconds = time.monotonic() - started
        if outcome.problems:
            outcome.log = self._log_since(offset, outcome.request_id)
        return outcome

    def _read(self, response: httpx.Response, outcome: Outcome) -> None:
        case = outcome.case
        status = outcome.status = response.status_code
        request_id = outcome.request_id = response.headers.get("request-id")
        problems = outcome.problems
        if not request_id:
            problems.append("no request-id header")
        if status >= 500 and not (status == 529 and response.headers.get("retry-after")):
            problems.append(f"status {status}" + (" without retry-after" if status == 529 else ""))
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        if streaming:
            frames, complete, buffer = [], False, b""
            deadline = time.monotonic() + STREAM_SECONDS
            for chunk in response.iter_bytes():
                buffer += chunk
                *done, buffer = buffer.split(b"\n\n")
                frames += [frame for frame in done if frame.strip()]
                if any(b"event: message_stop" in f or b"event: error" in f for f in done):
                    complete = True
                    break
                if time.monotonic() > deadline:
                    break  # closing the connection cancels the generation
            else:
                complete = True  # the server ended the stream
            outcome.detail = " | ".join(f.decode("utf-8", "replace")[:200] for f in frames[:3] + frames[-3:])
            if status == 200:
                problems += stream_problems(frames, complete)
            else:
                problems.append(f"status {status} with an event stream")
            return
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_BODY:
                break
        outcome.detail = body[:2000].decode("utf-8", "replace")
        if case.method == "HEAD":
            return
        if status >= 400:
            problems += error_problems(status, body, request_id)
        elif 300 <= status < 400:
            problems.append(f"a redirect ({status}): the API answers each path itself")
        elif status == 200 and case.path.startswith("/v1/messages/batches/") and case.path.endswith("/results"):
            problems += results_problems(body)
        elif status == 200 and case.path.startswith("/v1/files/") and case.path.endswith("/content"):
            pass  # a file's own bytes
        elif status == 200 and case.path.startswith("/v1/") and not _json_object(body):
            problems.append("a 200 whose body is not a JSON object")


def _json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def results_problems(body: bytes) -> list[str]:
    """What is wrong with a 200 of a batch's results: JSONL, each line an object with `custom_id` and
    `result`, no blank lines (a batch holds one request at least, so at least one line)."""
    if not body.endswith(b"\n"):
        return [f"batch results that do not end with a newline: {body[-200:]!r}"]
    problems = []
    for number, line in enumerate(body[:-1].split(b"\n"), 1):
        try:
            value = json.loads(line)
        except ValueError:
            problems.append(f"results line {number} is not JSON: {line[:200]!r}")
            continue
        if not isinstance(value, dict) or not isinstance(value.get("custom_id"), str) or "result" not in value:
            problems.append(f"results line {number} is not an object with custom_id and result: {line[:200]!r}")
    return problems[:5]


# --- who the fuzzer is, on the server ---------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """Keys and ids the cases use. The fuzzer changes and archives only `workspace_id` and `key_id`."""

    api_key: str  # an API key in a workspace of the fuzzer's own (its rate limits are its own)
    admin_key: str
    models: tuple[str, ...]
    workspace_id: str
    key_id: str
    batch_id: str  # a message batch of one request, made with `api_key` (ended, unless its run was slow)
    file_id: str = ""  # a file uploaded with `api_key`


def prepare(base_url: str, admin_key: str, batch_wait: float = 60.0) -> Targets:
    """Make the fuzzer's workspaces and keys through the Admin API, and a message batch of its own."""
    headers = {"x-api-key": admin_key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as admin:

        def made(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = admin.post(path, json=body)
            assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
            return response.json()

        own = made("/v1/organizations/workspaces", {"name": "fuzz"})
        key = made("/v1/organizations/api_keys", {"name": "fuzz", "workspace_id": own["id"]})["key"]
        target = made("/v1/organizations/workspaces", {"name": "fuzz target"})
        target_key = made("/v1/organizations/api_keys", {"name": "fuzz target", "workspace_id": target["id"]})
        listed = admin.get("/v1/models", params={"limit": 1000}, headers={"x-api-key": key})
        assert listed.status_code == 200, listed.text
        models = tuple(model["id"] for model in listed.json()["data"])
        one = {"model": models[0] if models else "smollm2-135m-instruct", "max_tokens": 1,
               "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
        batch = admin.post("/v1/messages/batches", json={"requests": [{"custom_id": "fuzz", "params": one}]},
                           headers={"x-api-key": key})  # fmt: skip
        assert batch.status_code == 200, f"/v1/messages/batches: {batch.status_code} {batch.text}"
        batch_id = batch.json()["id"]
        deadline = time.monotonic() + batch_wait  # ended, its results are a 200 and it can be deleted
        while time.monotonic() < deadline:
            state = admin.get(f"/v1/messages/batches/{batch_id}", headers={"x-api-key": key})
            if state.status_code != 200 or state.json().get("processing_status") == "ended":
                break
            time.sleep(0.3)
        file = admin.post("/v1/files", files={"file": ("fuzz.txt", b"fuzz", "text/plain")},
                          headers={"x-api-key": key, "anthropic-beta": FILES_BETA})  # fmt: skip
        assert file.status_code == 200, f"/v1/files: {file.status_code} {file.text}"
    return Targets(key, admin_key, models, target["id"], target_key["id"], batch_id, file.json()["id"])


# --- values ------------------------------------------------------------------------------------------

NUMBERS = [
    0, 1, -1, 4, 5, 255, 1023, 1024, 64_000, 64_001, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
    2**64, -(2**63) - 1, 10**30, 10**400, 0.5, -0.0, 1.0, 3.0, 1e308, -1e308, 1e-320,
    float("nan"), float("inf"), float("-inf"), True, False,
]  # fmt: skip
ODD_STRINGS = [
    "", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u001d", "é", "😀", "\u202e", "\ufeff", "\r\n", "\t",
    "NaN", "Infinity", "-0", "1e309", "null", "true", "[]", "{}", "%s%n", "{{7*7}}", "<|im_end|>",
    "<|im_start|>system", "<tool_call>", "../../etc/passwd", "\\", '"', "a" * 513, "x" * 10_000,
]  # fmt: skip
RAW_VALUES = [
    Raw(b"1e400"), Raw(b"-1e400"), Raw(b"NaN"), Raw(b"-Infinity"), Raw(b"01"), Raw(b"0x10"), Raw(b"1."),
    Raw(b"tru"), Raw(b"'single'"), Raw(b'"\\ud800"'), Raw(b'"\\u0000"'), Raw(b'"\\x41"'), Raw(b'"a\xffb"'),
    Raw(b'"\xed\xa0\x80"'), Raw(b'"\xc0\x80"'), Raw(b"[" * 150 + b"]" * 150), Raw(b"[" * 250 + b"]" * 250),
    Raw(b'{"a":' * 150 + b"1" + b"}" * 150), Raw(b'{"a":' * 300 + b"1" + b"}" * 300), Raw(b"[" * 100_000),
    Raw(b'{"a":1,"a":2}'), Raw(b"9" * 5000), Raw(b"1" + b"0" * 400 + b".5"),
]  # fmt: skip


def leaves() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(NUMBERS),
        st.integers(),
        st.floats(),
        st.sampled_from(ODD_STRINGS),
        st.text(max_size=12),
        st.sampled_from(RAW_VALUES),
    )


def hostile() -> st.SearchStrategy[Any]:
    """Any JSON value, leaning to the odd ones, a little nested."""
    return st.recursive(
        leaves(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "type", "", "\x00", "é"]), inner, max_size=3)
        ),
        max_leaves=5,
    )


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn in proportion to its weight."""
    picks = [index for index, (weight, _) in enumerate(choices) for _ in range(weight)]
    return st.sampled_from(picks).flatmap(lambda index: choices[index][1])


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], weight: int = 4) -> st.SearchStrategy[Any]:
    return weighted((weight, usual), (1, odd))


def _walk(node: Any) -> list[tuple[Any, Any]]:
    """(container, key) for every value inside `node`, outermost first."""
    found: list[tuple[Any, Any]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found.append((node, key))
        found += _walk(value)
    return found


@st.composite
def mutated(draw: st.DrawFn, value: Any, most: int = 3) -> Any:
    """`value` with up to `most` changes: a value replaced by a hostile one, a key removed or added."""
    value = copy.deepcopy(value)
    for _ in range(draw(st.sampled_from([0, 0, 0, *range(1, most + 1)]))):
        places = _walk(value)
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "unknown"]))
        if action == "replace":
            container[key] = draw(hostile())
        elif action == "delete":
            del container[key]
        else:
            target = container[key] if isinstance(container[key], dict) else container
            name = draw(st.sampled_from(["extra", "Model", "max-tokens", "", "type ", "__proto__", "\x00"]))
            if isinstance(target, dict):
                target[name] = draw(hostile())
            else:
                target.append(draw(hostile()))
    return value


def dumps(value: Any, ascii_only: bool = True) -> bytes:
    """JSON, with `Raw` spliced in, NaN and infinities as Python writes them, lone surrogates kept."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, dict):
        items = (dumps(str(key), ascii_only) + b":" + dumps(item, ascii_only) for key, item in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(dumps(item, ascii_only) for item in value) + b"]"
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def encoded(draw: st.DrawFn, value: Any, large: bool = False) -> bytes:
    """A JSON body as bytes: mostly well formed, sometimes broken in one of many ways."""
    body = dumps(value, draw(st.booleans()))
    how = draw(st.sampled_from(["json"] * 60 + CORRUPTIONS + (["huge"] if large else [])))
    if how == "json":
        return body
    at = draw(st.integers(0, len(body)))
    if how == "truncated":
        return body[:at]
    if how == "bad byte":
        return body[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\x00"])) + body[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    if how == "utf-16":
        return body.decode("utf-8", "surrogateescape").encode("utf-16", "surrogatepass")
    if how == "latin-1":
        return body.decode("utf-8", "surrogateescape").encode("latin-1", "replace")
    if how == "trailing":
        return body + draw(st.sampled_from([b"x", b"\x00", b"{}", b",", b"\n\n\n", b"]"]))
    if how == "duplicate keys":
        return b'{"model":1,"max_tokens":"x",' + body[1:] if body.startswith(b"{") and len(body) > 2 else body
    if how == "padded":
        return b" \n\t\r" * 2000 + body + b" " * 2000
    if how == "not an object":
        return draw(st.sampled_from([b"[]", b"null", b"1", b'"x"', b"true", b"[{}]", b"{", b"}", b"", b" "]))
    if how == "form":
        return b"model=x&max_tokens=1&messages=hi"
    if how == "bytes":
        return draw(st.binary(max_size=64))
    return b'{"model":"x","max_tokens":1,"messages":[{"role":"user","content":"' + b"a" * (33 << 20) + b'"}]}'


CORRUPTIONS = [
    "truncated", "bad byte", "bom", "utf-16", "latin-1", "trailing", "duplicate keys", "padded",
    "not an object", "form", "bytes",
]  # fmt: skip


# --- headers ------------------------------------------------------------------------------------------

VERSIONS = ["2023-06-01", "2026-10-21"]
BETAS = [
    "prompt-caching-2024-07-31", "interleaved-thinking-2025-05-14", "context-management-2025-06-27",
    "mcp-client-2025-04-04", "task-budgets-2026-03-13", "mid-conversation-tool-changes-2026-07-01",
    "compact-2026-01-12", "inline-tools-2026-09-15", "thinking-display-updates-2026-08-18",
    "prompt-caching-scope-2026-01-05", "server-side-fallback-2026-06-01", "dangerous-tool-use-2026-09-03",
    "per-turn-control-2026-07-01", "mid-conversation-system-clear-at-2026-08-21", "oauth-2025-04-20",
    "claude-code-20250219", "unknown-beta-2099-01-01", "", " ", "a" * 300, "x,y", "é", "\x01",
]  # fmt: skip
HEADER_TEXT = st.text(
    st.characters(codec="latin-1", exclude_characters="\x00\t\n\x0b\x0c\r \x7f", exclude_categories=["Zs"]),
    min_size=1,
    max_size=40,
)


def _value(draw: st.DrawFn) -> bytes:
    return draw(HEADER_TEXT).encode("latin-1")


@st.composite
def auth_headers(draw: st.DrawFn, right: str, other: str) -> list[tuple[bytes, bytes]]:
    """Mostly the right key; otherwise none, a wrong one, the other kind of key, or odd forms of it."""
    how = draw(st.sampled_from(["x-api-key"] * 30 + ["bearer", "both", "none", "wrong", "other", "odd"]))
    if how == "x-api-key":
        return [(b"x-api-key", right.encode())]
    if how == "bearer":
        scheme = draw(st.sampled_from([b"Bearer ", b"bearer ", b"BEARER  ", b"Bearer", b"Basic ", b"Token "]))
        return [(b"authorization", scheme + draw(st.sampled_from([right.encode(), b"", b"sk-ant-x"])))]
    if how == "both":
        keys = draw(st.permutations([right.encode(), b"sk-missive-wrong"]))
        return [(b"x-api-key", keys[0]), (b"authorization", b"Bearer " + keys[1])]
    if how == "none":
        return []
    if how == "wrong":
        wrong = draw(st.sampled_from([b"sk-missive-x", right[:-1].encode(), (right + "x").encode(), b"k" * 2000]))
        return [(b"x-api-key", wrong)]
    if how == "other":
        return [(b"x-api-key", other.encode())]
    return [(b"x-api-key", _value(draw))]


@st.composite
def api_headers(
    draw: st.DrawFn, right: str, other: str, content_type: bool = True
) -> tuple[tuple[bytes, bytes], ...]:
    headers = draw(auth_headers(right, other))
    version = draw(st.sampled_from(VERSIONS * 25 + ["absent", "", "2023-01-01", "2023-06-01\x01", "latest", "odd"]))
    if version == "odd":
        headers.append((b"anthropic-version", _value(draw)))
    elif version != "absent":
        headers.append((b"anthropic-version", version.encode()))
    if draw(st.booleans()):
        betas = draw(st.lists(st.sampled_from(BETAS), max_size=6))
        joiner = draw(st.sampled_from([",", ", ", " ,", ",,"]))
        header = joiner.join(betas).encode("utf-8")
        headers.append((b"anthropic-beta", header if header.strip() else b"x"))
    if content_type:
        kind = draw(
            st.sampled_from(
                [b"application/json"] * 20
                + [b"", b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x",
                   b"application/json; charset=utf-16", b"application/xml", b"*/*", b"absent"]
            )
        )  # fmt: skip
        if kind == b"":
            kind = _value(draw)
        if kind != b"absent":
            headers.append((b"content-type", kind))
    for _ in range(draw(st.integers(0, 2))):
        name = draw(
            st.sampled_from(
                [b"accept", b"accept-encoding", b"content-encoding", b"x-stainless-retry-count",
                 b"x-stainless-timeout", b"anthropic-dangerous-direct-browser-access", b"x-should-retry",
                 b"user-agent", b"x-api-key", b"anthropic-version", b"x-forwarded-for", b"origin",
                 b"expect", b"x-odd"]
            )
        )  # fmt: skip
        value = draw(st.sampled_from([b"gzip", b"text/event-stream", b"true", b"-1", b"99999999999999999999"]))
        headers.append((name, value if draw(st.booleans()) else _value(draw)))
    return tuple((name, value.strip(b" \t")) for name, value in headers)


# --- query strings and path ids --------------------------------------------------------------------

QUERY_VALUES = [
    "", "0", "1", "-1", "20", "1000", "1001", "1e3", "1.5", "99999999999999999999", "9" * 5000, "%C2%B2",
    "NaN", "true", "yes", "%00", "%ff%fe", "%C3%A9", "a+b", "%", "%zz", "x" * 2000,
]  # fmt: skip


@st.composite
def query(draw: st.DrawFn, names: list[str], values: dict[str, list[str]] | None = None) -> str:
    values = values or {}
    pairs = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from([*names, *names, "beta", "x", "", "a[b]", "%00", "limit[]", "é"]))
        pool = values.get(name, []) + QUERY_VALUES
        value = draw(st.sampled_from(pool))
        form = draw(st.sampled_from(["{n}={v}"] * 6 + ["{n}", "{n}=", "={v}", "{n}={v}={v}", "&&", ";{n}={v}"]))
        pairs.append(form.format(n=name, v=value))
    return "&".join(pairs)


IDS = [
    "", "%00", "%ff", "%C3%A9", "..", "..%2F..%2Fetc%2Fpasswd", "%2F", "a" * 2000, "default", "null",
    "%20", "x%0Ay", "wrkspc_01", "apikey_01", "-1", "99999999999999999999", "%25", "*",
]  # fmt: skip


# --- the Messages API bodies ----------------------------------------------------------------------

PROMPTS = ["Hi", "Say hi", "2+2?", "Reply with one word.", "Name a colour."]
TOOL_NAMES = ["get_weather", "lookup", "bad name!", "", "a" * 129, "bash", "é"]
BOUNDS = [0, 1, 3, 100, 1000, 2000, 5000, 20_000, 10**9, 2**63, 10**25, -1, 1.5, "10", None]
PATTERNS = [
    "^a+$", "a{2000}", "a{20000}", "(", "[", "\\", "(a|b)*c", "^(?=a)", "\\p{L}+", "a{5,2}", "((a+)+)+$",
    ".*", "", "\\d{3}-\\d{4}", "[^\\x00-\\x7f]", "\\u0000", "(?P<n>a)",
]  # fmt: skip
SIMPLE_SCHEMAS = [
    {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": ["string", "null"]}, {"const": "\u001d"}, {"const": ""}, {"const": None}, {"enum": []},
    {"enum": ["a", 1, None, [], {}]}, {"enum": [f"value-{i}" for i in range(2000)]}, {"$ref": "#"},
    {"$ref": "#/$defs/missing"}, {"$ref": "http://example.invalid/schema.json"}, {"anyOf": []},
    {"oneOf": [{"type": "string"}, {"type": "integer"}]}, {"allOf": [{"type": "string"}, {"type": "integer"}]},
    {"not": {}}, {"type": "string", "format": "date-time"}, {"type": "string", "format": "uuid"},
    {"type": "strnig"}, {}, True, False, {"type": "object", "additionalProperties": False},
    {"type": "object", "patternProperties": {"^a": {}}}, {"type": "number", "multipleOf": 0},
    {"type": "array", "prefixItems": [{"type": "string"}], "items": False},
    {"type": "object", "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}},
     "properties": {"head": {"$ref": "#/$defs/n"}}},
]  # fmt: skip


def _nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def property_schemas() -> st.SearchStrategy[Any]:
    bound = st.sampled_from(BOUNDS)
    return st.one_of(
        st.sampled_from(SIMPLE_SCHEMAS),
        st.fixed_dictionaries({"type": st.just("string")}, optional={"minLength": bound, "maxLength": bound}),
        st.fixed_dictionaries({"type": st.just("string"), "pattern": st.sampled_from(PATTERNS)}),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["integer", "number"])},
            optional={
                "minimum": st.sampled_from(NUMBERS), "maximum": st.sampled_from(NUMBERS),
                "exclusiveMinimum": st.sampled_from(NUMBERS), "exclusiveMaximum": st.sampled_from(NUMBERS),
            },
        ),  # fmt: skip
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": st.sampled_from(SIMPLE_SCHEMAS[:6])},
            optional={"minItems": bound, "maxItems": bound, "uniqueItems": st.booleans()},
        ),
        st.sampled_from([_nested_schema(depth) for depth in (10, 40, 90, 98)]),
    )


def object_schemas() -> st.SearchStrategy[Any]:
    names = st.sampled_from(["city", "n", "", "a b", "é", "$ref", "\x00", "type"])
    return st.one_of(
        st.builds(
            lambda props, required: {"type": "object", "properties": props, "required": required},
            st.dictionaries(names, property_schemas(), max_size=3),
            st.lists(names, max_size=2),
        ),
        st.just({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        st.sampled_from([_nested_schema(depth) for depth in (10, 90)]),
        st.sampled_from([{"type": "object"}, {"type": "string"}, {"properties": []}, {"type": "object", "required": "city"}]),
    )


def cache_control() -> st.SearchStrategy[Any]:
    return mostly(
        st.fixed_dictionaries({"type": st.just("ephemeral")}, optional={"ttl": st.sampled_from(["5m", "1h"])}),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["ephemeral", "persistent", ""])},
            optional={"ttl": st.sampled_from(["5m", "1h", "2h", 300, None]), "scope": st.sampled_from(["global", "x"])},
        ),
    )


TINY_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()


def blocks() -> st.SearchStrategy[Any]:
    text = mostly(st.sampled_from(PROMPTS), st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=20)))
    cc = {"cache_control": cache_control()}
    return st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": text}, optional={**cc, "citations": st.sampled_from([[], [{"type": "char_location"}], None])}),
        st.fixed_dictionaries(
            {"type": st.just("image"), "source": st.one_of(
                st.fixed_dictionaries({
                    "type": st.just("base64"),
                    "media_type": st.sampled_from(["image/png", "image/jpeg", "image/bmp", ""]),
                    "data": st.sampled_from([TINY_PNG, "", "!!!!", "aGk=", "a" * 1001, TINY_PNG[:-4]]),
                }),
                st.fixed_dictionaries({"type": st.just("url"), "url": st.sampled_from(["https://example.invalid/a.png", "file:///etc/passwd", "", "http://127.0.0.1:1/"])}),
                st.fixed_dictionaries({"type": st.just("file"), "file_id": st.sampled_from(["file_1", "", "../x"])}),
            )},
            optional=cc,
        ),
        st.fixed_dictionaries(
            {"type": st.just("document"), "source": st.one_of(
                st.fixed_dictionaries({"type": st.just("text"), "media_type": st.just("text/plain"), "data": text}),
                st.fixed_dictionaries({"type": st.just("base64"), "media_type": st.just("application/pdf"), "data": st.sampled_from(["", "JVBERi0=", "!!"])}),
                st.fixed_dictionaries({"type": st.just("content"), "content": st.one_of(text, st.just([{"type": "text", "text": "x"}]))}),
            )},
            optional={**cc, "title": text, "context": text, "citations": st.just({"enabled": True})},
        ),
        st.fixed_dictionaries(
            {"type": st.just("tool_use"), "id": st.sampled_from(["toolu_1", "toolu_2", "bad id!", ""]),
             "name": st.sampled_from(TOOL_NAMES), "input": mostly(st.just({"city": "Paris"}), hostile())},
            optional=cc,
        ),
        st.fixed_dictionaries(
            {"type": st.just("tool_result"), "tool_use_id": st.sampled_from(["toolu_1", "toolu_x", "", "a b"])},
            optional={**cc, "content": mostly(st.one_of(text, st.just([{"type": "text", "text": "sunny"}])), hostile()), "is_error": st.booleans()},
        ),
        st.fixed_dictionaries({"type": st.just("thinking"), "thinking": text, "signature": st.sampled_from(["", "abc", "E" * 200])}),
        st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": text}),
        st.sampled_from([
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "container_upload", "file_id": "file_1"},
            {"type": "compaction", "content": "earlier, we said hi"},
            {"type": "mcp_tool_use", "id": "mcptoolu_1", "name": "x", "server_name": "s", "input": {}},
            {"type": "tool_addition", "tool": {"type": "tool_reference", "name": "get_weather"}},
            {"type": "tool_removal", "tool": {"type": "mcp_toolset_reference", "server_name": "s"}},
            {"type": "tool_addition", "tool": {"type": "tool_definition", "definition": {"name": "t", "input_schema": {"type": "object"}}}},
            {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "x"}]},
            {"type": "tool_reference", "tool_name": "get_weather"},
            {"type": "video", "url": "x"}, {"type": ""}, {"text": "no type"}, {"type": None},
        ]),
    )  # fmt: skip


def messages() -> st.SearchStrategy[Any]:
    role = st.sampled_from(["user", "assistant", "user", "system", "tool", "developer", ""])
    content = st.one_of(st.sampled_from(PROMPTS), st.lists(blocks(), max_size=3))
    message = st.fixed_dictionaries(
        {"role": role, "content": content},
        optional={"clear_at": st.sampled_from(["next_user_message", "never", "later"]), "output_config": st.just({"effort": "low"})},
    )
    prompt = st.sampled_from(PROMPTS)
    return weighted(
        (6, st.builds(lambda p: [{"role": "user", "content": p}], prompt)),
        (2, st.builds(lambda b: [{"role": "user", "content": b}], st.lists(blocks(), min_size=1, max_size=2))),
        (1, st.builds(lambda p, a: [{"role": "user", "content": p}, {"role": "assistant", "content": a}], prompt, st.sampled_from(["The answer is", "Sure ", ""]))),
        (2, st.builds(
            lambda p, result: [
                {"role": "user", "content": p},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": result}]},
            ],
            prompt, st.sampled_from(["sunny", "", [{"type": "text", "text": "rain"}]]),
        )),
        (1, st.builds(lambda p: [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}], prompt)),
        (2, st.lists(message, max_size=4)),
        (1, hostile()),
    )  # fmt: skip


def tools() -> st.SearchStrategy[Any]:
    custom = st.fixed_dictionaries(
        {"name": mostly(st.sampled_from(TOOL_NAMES[:2]), st.sampled_from(TOOL_NAMES)), "input_schema": object_schemas()},
        optional={
            "description": st.sampled_from(["Weather for a city.", "", "x" * 10_000]),
            "type": mostly(st.sampled_from(["custom", None]), st.just("function")),
            "cache_control": cache_control(),
            "strict": st.booleans(),
            "input_examples": st.just([{"city": "Paris"}]),
            "eager_input_streaming": st.booleans(),
            "defer_loading": st.booleans(),
        },
    )
    builtin = st.one_of(
        st.sampled_from([
            {"type": "bash_20250124", "name": "bash"}, {"type": "memory_20250818", "name": "memory"},
            {"type": "web_search_20250305", "name": "web_search"}, {"type": "computer_20250124", "name": "computer"},
            {"type": "mcp_toolset", "mcp_server_name": "s"}, {"type": "unknown_20990101", "name": "x"},
            {"type": 5, "name": "x"}, {"type": "bash_20250124", "name": "shell"},
        ]),
        st.builds(lambda n: {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool", "max_characters": n}, st.sampled_from(NUMBERS)),
    )  # fmt: skip
    return mostly(st.lists(weighted((5, custom), (1, builtin)), min_size=1, max_size=3), hostile())


def tool_choices() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}, {"type": "required"}, "auto", {}]),
        st.builds(lambda n: {"type": "tool", "name": n}, st.sampled_from(TOOL_NAMES)),
        st.builds(lambda t, d: {"type": t, "disable_parallel_tool_use": d}, st.sampled_from(["auto", "any"]), hostile()),
    )


def thinking() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda n: {"type": "enabled", "budget_tokens": n}, st.sampled_from([1024, 2048, 1023, *NUMBERS])),
        st.sampled_from([{"type": "disabled"}, {"type": "between_tools"}, {"type": "on"}, {"type": "enabled"}]),
        st.fixed_dictionaries(
            {"type": st.just("adaptive")},
            optional={"display": st.sampled_from(["summarized", "omitted", "updates", "full"]),
                      "block_binding": st.just({"prefix_mismatch_behavior": "drop_block"})},
        ),
    )  # fmt: skip


def output_configs() -> st.SearchStrategy[Any]:
    format_ = st.one_of(
        st.builds(lambda s: {"type": "json_schema", "schema": s}, st.one_of(object_schemas(), property_schemas())),
        st.sampled_from([{"type": "json_object"}, {"type": "json_schema"}, {"type": "text"}]),
    )
    budget = st.fixed_dictionaries({"type": st.just("tokens"), "total": st.sampled_from(NUMBERS)}, optional={"remaining": st.sampled_from(NUMBERS)})
    return st.fixed_dictionaries(
        {},
        optional={"effort": st.sampled_from(["low", "medium", "high", "xhigh", "max", "ultra", 3]), "format": format_, "task_budget": budget},
    )  # fmt: skip


def _unit() -> st.SearchStrategy[float | int]:
    return st.one_of(st.floats(0, 1), st.sampled_from([0, 1, 0.95, -0.0, 1.0000001, -0.1, 2, *NUMBERS]))


def optional_fields() -> dict[str, st.SearchStrategy[Any]]:
    """The optional fields and what to put in them. Hypothesis favours the first ones a little: those
    that are part of the plain API come first, those that need a beta or do not exist last."""
    return {
        "system": mostly(st.one_of(st.sampled_from(["Be brief.", "", " "]), st.lists(blocks(), max_size=2)), hostile()),
        "tools": tools(),
        "tool_choice": tool_choices(),
        "temperature": _unit(),
        "stop_sequences": mostly(st.lists(st.sampled_from(["\n", " ", "", "END", "x" * 5000, "\ud800"]), max_size=3), hostile()),
        "metadata": mostly(st.builds(lambda u: {"user_id": u}, st.sampled_from(["u1", "a" * 512, "a" * 513, '{"device_id":"x"}', "", 5])), hostile()),
        "cache_control": cache_control(),
        "output_config": output_configs(),
        "thinking": thinking(),
        "top_p": _unit(),
        "top_k": st.sampled_from(NUMBERS),
        "stream": mostly(st.booleans(), hostile()),
        "service_tier": st.sampled_from(["auto", "standard_only", "priority", ""]),
        "speed": st.sampled_from(["standard", "fast", "turbo"]),
        "container": st.sampled_from(["container_1", {"id": "c"}, 5]),
        "inference_geo": st.sampled_from(["us", "eu", ""]),
        "diagnostics": st.sampled_from([{"previous_message_id": "msg_1"}, {"x": 1}]),
        "context_management": mostly(st.just({"edits": [{"type": "clear_tool_uses_20250919"}]}), hostile()),
        "mcp_servers": mostly(st.just([{"type": "url", "url": "https://example.invalid", "name": "s"}]), hostile()),
        "billing_policy": st.sampled_from([{"type": "billing_policy", "bill_to": "self"}, {"type": "x"}]),
        "fallbacks": st.sampled_from(["default", [{"model": "x"}], "none"]),
        "fallback_credit_token": st.sampled_from(["t", ""]),
        "safeguards": st.sampled_from([[{"type": "x"}], "x"]),
        "n": st.sampled_from([1, 2]),
        "response_format": st.just({"type": "json_object"}),
        "stop": st.just(["\n"]),
        "frequency_penalty": st.sampled_from(NUMBERS),
    }  # fmt: skip


@st.composite
def message_bodies(draw: st.DrawFn, models: tuple[str, ...], count: bool = False, stream: bool = False) -> Any:
    model = draw(mostly(st.sampled_from(models), st.sampled_from(
        ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-1", "unknown-model", "", "a" * 1000, "é", "*"])))  # fmt: skip
    body: dict[str, Any] = {"model": model, "messages": draw(messages())}
    if not count:
        body["max_tokens"] = draw(st.sampled_from([1, 2, 3, 4] * 4 + [0, 1025, 2049, *NUMBERS]))
    if draw(st.integers(0, 3)) == 0:  # a sound request around a generated schema: what reaches the grammar
        schema = draw(object_schemas())
        if draw(st.booleans()):
            body["tools"] = [{"name": "record", "description": "Record the answer.", "input_schema": schema}]
            body["tool_choice"] = draw(st.sampled_from([{"type": "any"}, {"type": "tool", "name": "record"}, {"type": "auto"}]))
        else:
            body["output_config"] = {"format": {"type": "json_schema", "schema": draw(mostly(st.just(schema), property_schemas(), 1))}}
        if not count:
            body["stream"] = stream
        return _cheap(draw, body)
    choices = optional_fields()
    fields = st.lists(st.sampled_from(list(choices)), unique=True, min_size=(n := draw(st.sampled_from([0, 0, 1, 1, 1, 2, 2, 3, 4]))), max_size=n)
    for name in draw(fields):
        body[name] = draw(choices[name])
    if stream:
        body["stream"] = True
    elif "stream" in body and body["stream"] is True:
        del body["stream"]
    return _cheap(draw, draw(mutated(body, most=2)))


def _cheap(draw: st.DrawFn, body: Any) -> Any:
    """Keep generation cheap: a short answer, or (with thinking) a stream that the client cuts short."""
    if isinstance(body, dict):
        tokens = body.get("max_tokens")
        if type(tokens) is int and 4 < tokens <= 64_000 and (body.get("stream") is not True or "thinking" not in body):
            body["max_tokens"] = draw(st.integers(1, 4))
    return body


# --- the Message Batches API bodies ---------------------------------------------------------------

CUSTOM_IDS = ["a", "req-1", "req_2", "A-b_9", "0", "-", "x" * 64]
BAD_CUSTOM_IDS = [
    "", "x" * 65, "has space", "é", "a/b", "a.b", "a:b", "a\x00", "\ud800", "a\n", "😀", " a", "a ", "a" * 10_000,
]  # fmt: skip
FILES_BETA = "files-api-2025-04-14"
FILE_IDS = ["file_nosuchfile", "file_", "FILE_X", "file_%00", "file_..%2F..%2Fmissive.db", "file_" + "a" * 65, "fuzz"]
FILE_CONTENTS = [b"hello", b"", b"%PDF-1.4\n%%EOF", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\x00" * 64, b"--b\r\n", b"\r\n--b--"]
FILENAMES = ["a.txt", "report.pdf", "image.png", "upload", "", "a/b.txt", "..", "a" * 256, "é.txt", "a\x00b", 'q"uote', "a\r\nX-Evil: 1"]
PART_TYPES = [None, None, "text/plain", "application/pdf", "image/png", "application/octet-stream", "", "x", "a" * 300]


@st.composite
def upload_bodies(draw: st.DrawFn) -> tuple[bytes | None, bytes]:
    """A Files API upload: (content-type header, body), mostly well formed multipart, often broken."""
    boundary = draw(st.sampled_from(["b0und", "b0und", "x" * 71, "a b", "-"]))

    def part(name: str | None, value: bytes, filename: str | None, content_type: str | None = None) -> bytes:
        disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
        disposition += f'; filename="{filename}"' if filename is not None else ""
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        head += f"Content-Type: {content_type}\r\n" if content_type is not None else ""
        return head.encode("utf-8", "surrogatepass") + b"\r\n" + value + b"\r\n"

    parts = [part("file", draw(st.sampled_from(FILE_CONTENTS)), draw(mostly(st.just("a.txt"), st.sampled_from(FILENAMES))),
                  draw(st.sampled_from(PART_TYPES)))]  # fmt: skip
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        name = draw(st.sampled_from(["expires_in_seconds", "file", "purpose", None, "", "é"]))
        value = draw(st.sampled_from([b"1", b"3600", b"0", b"-1", b"soon", b"9" * 40, b"x" * 2000]))
        parts.append(part(name, value, draw(st.sampled_from([None, None, "b.txt"]))))
    if draw(st.integers(0, 4)) == 0:
        draw(st.randoms()).shuffle(parts)
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    how = draw(st.sampled_from(["whole"] * 12 + ["truncated", "no end", "bytes", "json", "empty", "bad byte"]))
    if how == "truncated":
        body = body[: draw(st.integers(0, len(body)))]
    elif how == "no end":
        body = b"".join(parts)
    elif how == "bytes":
        body = draw(st.binary(max_size=128))
    elif how == "json":
        body = b'{"file": "hello"}'
    elif how == "empty":
        body = b""
    elif how == "bad byte":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + b"\xff\x00" + body[at:]
    kind = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}"] * 8 + [
        "multipart/form-data", "multipart/form-data; boundary=other", "application/json", "text/plain",
        f'multipart/form-data; boundary="{boundary}"', f"MULTIPART/FORM-DATA; BOUNDARY={boundary}", "absent"]))  # fmt: skip
    return (None if kind == "absent" else kind.encode("utf-8", "surrogatepass")), body


BATCH_IDS = ["msgbatch_nosuchbatch", "msgbatch_", "MSGBATCH_X", "msgbatch_%00", "msgbatch_..%2F", "req_01", "fuzz"]


def custom_ids() -> st.SearchStrategy[Any]:
    return weighted((10, st.sampled_from(CUSTOM_IDS)), (2, st.sampled_from(BAD_CUSTOM_IDS)), (1, hostile()))


@st.composite
def batch_items(draw: st.DrawFn, models: tuple[str, ...]) -> dict[str, Any]:
    """One `{"custom_id", "params"}`, sometimes short of a field or with one too many."""
    item = {"custom_id": draw(custom_ids()), "params": draw(mostly(message_bodies(models), hostile(), 12))}
    how = draw(st.sampled_from(["sound"] * 14 + ["no custom_id", "no params", "extra"]))
    if how == "no custom_id":
        del item["custom_id"]
    elif how == "no params":
        del item["params"]
    elif how == "extra":
        item[draw(st.sampled_from(["method", "url", "body", "extra", "", "customId", "custom_id "]))] = draw(hostile())
    return item


@st.composite
def batch_bodies(draw: st.DrawFn, models: tuple[str, ...]) -> Any:
    """A create body, `{"requests": [...]}` of one to three items, then broken a little (`mutated`)."""
    items = [draw(batch_items(models)) for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3])))]
    if len(items) > 1 and draw(st.integers(0, 3)) == 0 and "custom_id" in items[0]:
        items[-1]["custom_id"] = items[0]["custom_id"]  # a duplicate
    body: dict[str, Any] = {"requests": draw(weighted((12, st.just(items)), (1, st.just([])), (1, hostile())))}
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.sampled_from(["extra", "model", "messages", "max_tokens", "", "requests "]))] = draw(hostile())
    return _tiny(draw, draw(mutated(body, most=2)))


def _tiny(draw: st.DrawFn, body: Any) -> Any:
    """A batch's requests run for real on the shared server: none streams, none asks for more than 4
    tokens (any number a request could take as a `max_tokens` above 4 becomes 1 to 4)."""
    items = body.get("requests") if isinstance(body, dict) else None
    for item in items if isinstance(items, list) else []:
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(params, dict):
            continue
        params.pop("stream", None)
        tokens = params.get("max_tokens")
        if isinstance(tokens, str):
            try:
                tokens = float(tokens)
            except ValueError:
                continue
        if isinstance(tokens, (int, float)) and not isinstance(tokens, bool) and 4 < tokens <= 10**6:
            params["max_tokens"] = draw(st.integers(1, 4))
    return body


# --- the Admin API bodies -----------------------------------------------------------------------------

MONEY = [
    "100.00", "0", "0.00", "-1", "-0.01", "NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "1e309", "1e-309",
    "9223372.03", "9223372.04", "9223372036854775807", "1" * 60, "0.0000000001", "1,000", " 5 ", "5$", "",
    "0x10", "1_000", 100, 1.5, None, True, float("nan"),
]  # fmt: skip


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


NOW = datetime.now(UTC)
DATES = [
    _stamp(NOW - timedelta(days=1)), _stamp(NOW - timedelta(hours=2)), _stamp(NOW + timedelta(days=30)),
    "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z", "2025-02-30T00:00:00Z", "2025-01-01", "2025-01-01T00:00:00+99:00",
    "2025-01-01T25:00:00Z", "now", "", "-1", "1700000000", "2025-01-01T00:00:00.123456789Z", "2025-W01",
    "+10000-01-01T00:00:00Z", "2025-01-01T00:00:00\x00",
]  # fmt: skip
PAGES = [
    "page_MTAwMDAwMDAwMDAwMDAwMDAw", "page_" + base64.urlsafe_b64encode(str(2**63).encode()).decode(),
    "page_" + base64.urlsafe_b64encode(b"-1").decode(), "page_" + base64.urlsafe_b64encode(b"0").decode(),
    "page_%%%", "page_", "", "x", "page_" + "A" * 2000, "page_" + base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "page_" + base64.urlsafe_b64encode(b"1e400").decode(), "page_MTcwMDAwMDAwMA", "page_MTcwMDAwMDAwMA==",
    "page_MTczNTY4OTYwMA", "page_" + base64.urlsafe_b64encode(b"253370764800").decode(),  # 2025-01-01, 9999-01-01
]  # fmt: skip
QUOTED_DATES = [quote(date, safe="") for date in DATES]  # as a query string carries them: "+14:00" is %2B14:00
REPORT_VALUES = {
    "starting_at": QUOTED_DATES, "ending_at": QUOTED_DATES, "bucket_width": ["1m", "1h", "1d", "7d", "1M", "", "1D"],
    "limit": ["1", "7", "31", "32", "168", "1440", "1441", "0", "-1", "1e3", "99999999999999999999", "9" * 5000, "%C2%B2"],
    "page": [quote(page, safe="") for page in PAGES], "group_by[]": ["api_key_id", "workspace_id", "model", "service_tier", "description", "x"],
    "group_by": ["model", "description"], "api_key_ids[]": ["apikey_1", "%00"], "workspace_ids[]": ["default", "%00"],
    "models[]": ["smollm2-135m-instruct"], "service_tiers[]": ["standard", "batch"],
}  # fmt: skip


def _report_query(draw: st.DrawFn) -> str:
    """Mostly a sound window; often an edge value in one of its bounds, its page or its limit."""
    dates = weighted((3, st.sampled_from(QUOTED_DATES[:3])), (1, st.sampled_from(QUOTED_DATES[3:7])),
                     (1, st.sampled_from(QUOTED_DATES)))  # fmt: skip
    parts = [f"starting_at={draw(dates)}"]
    if draw(st.integers(0, 3)) == 0:
        parts.append(f"ending_at={draw(dates)}")
    for name in ("page", "limit"):
        if draw(st.integers(0, 4)) == 0:
            parts.append(f"{name}={draw(st.sampled_from(REPORT_VALUES[name]))}")
    if not draw(st.integers(0, 3)):
        parts = parts[1:]  # no starting_at
    parts.append(draw(query(sorted(REPORT_VALUES), REPORT_VALUES)))
    return "&".join(part for part in parts if part)


def _ids(known: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(known * 12 + IDS)


# --- cases, route by route --------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def strategies(targets: Targets, large: bool = False) -> dict[str, st.SearchStrategy[Case]]:
    """One strategy per route (the keys are the routes), each drawing whole `Case`s."""
    t = targets
    models = t.models or ("smollm2-135m-instruct",)
    api = functools.partial(api_headers, t.api_key, t.admin_key)
    admin = functools.partial(api_headers, t.admin_key, t.api_key)
    o = "/v1/organizations"

    def messages_case(route: str, path: str, count: bool = False, stream: bool = False) -> st.SearchStrategy[Case]:
        @st.composite
        def case(draw: st.DrawFn) -> Case:
            body = draw(encoded(draw(message_bodies(models, count, stream)), large))
            extra = draw(st.sampled_from(["", "", "", "beta=true", "beta=false", "beta=true&beta=x"]))
            return Case(route, "POST", path, extra, draw(api()), body)

        return case()

    def get_case(route: str, paths: st.SearchStrategy[str], headers: Any, names: list[str], values: dict | None = None) -> st.SearchStrategy[Case]:
        return st.builds(
            lambda path, h, q, method: Case(route, method, path, q, h),
            paths, headers(content_type=False), query(names, values), st.sampled_from(["GET"] * 9 + ["HEAD"]),
        )

    def body_case(route: str, paths: st.SearchStrategy[str], body: st.SearchStrategy[Any]) -> st.SearchStrategy[Case]:
        @st.composite
        def case(draw: st.DrawFn) -> Case:
            value = draw(mutated(draw(body), most=2))  # a huge body costs little here: refused by its length
            return Case(route, "POST", draw(paths), "", draw(admin()), draw(encoded(value, large=True)))

        return case()

    def report_case(route: str, path: str) -> st.SearchStrategy[Case]:
        @st.composite
        def case(draw: st.DrawFn) -> Case:
            return Case(route, "GET", path, _report_query(draw), draw(admin(content_type=False)))

        return case()

    money = st.sampled_from(MONEY)
    tiers = st.sampled_from(["default", "tier-1", "tier-4", "unknown", "", None, 5, "t" * 10_000, "tier-1\x00"])
    names = st.sampled_from(["team", "", "a" * 40, "a" * 41, "\x00", "é" * 40, "\ud800", "x y"])
    workspace = st.fixed_dictionaries(
        {"name": names}, optional={"rate_limit_tier": tiers, "monthly_spend_limit": money, "credit_balance": money}
    )
    workspace_update = st.fixed_dictionaries(
        {}, optional={"name": names, "rate_limit_tier": tiers, "monthly_spend_limit": money, "credit_balance": money}
    )
    key_create = st.fixed_dictionaries(
        {"name": st.sampled_from(["k", "", "a" * 501, "\x00", "é"])},
        optional={
            "workspace_id": st.sampled_from([t.workspace_id, "default", "wrkspc_missing", "", "\x00", 5]),
            "expires_at": st.sampled_from(DATES + [1700000000, None, 10**20, -1]),
        },
    )
    key_update = st.fixed_dictionaries(
        {}, optional={"name": st.sampled_from(["k2", "", "a" * 501]), "status": st.sampled_from(["active", "inactive", "archived", "deleted", "", None])}
    )  # fmt: skip
    own_workspace = _ids([t.workspace_id])  # the only workspace the fuzzer may change
    own_key = _ids([t.key_id])
    model_ids = st.one_of(st.sampled_from(models), st.sampled_from(IDS + ["claude-sonnet-4-6", "a/b", "smollm2-135m-instruct/x"]))
    list_values = {"limit": ["1", "20", "1000", "1001", "0", "-1"], "include_archived": ["true", "false", "1", "x"],
                   "status": ["active", "archived", "x"], "after_id": [t.workspace_id, t.key_id], "before_id": [t.key_id]}  # fmt: skip
    methods = ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "GET", "POST", "HEAD"]
    paths = [
        "/", "/v1", "/v1/", "/v1/messages", "/v1/messages/", "/v1/complete", "/v2/messages",
        "//v1/messages", "/v1/messages/../models", "/%00", "/v1/models/", "/.env", "/metrics/", "/v1/organizations",
        "/v1/organizations/me", "/v1/files", "/v1/organizations/workspaces/default/members", "/" + "a" * 2000,
        "/v1/%ff", "/v1/models%2F..", "/favicon.ico", "/v1/messages/count_tokens/x", "/v1/messages/batches/x/results/y",
    ]  # fmt: skip

    batches = "/v1/messages/batches"
    batch_ids = weighted((4, _ids([t.batch_id] * 2)), (1, st.sampled_from(BATCH_IDS)))  # the real one about half the time
    beta_noise = st.sampled_from(["", "", "", "beta=true", "beta=false", "beta=true&beta=x"])
    batch_query = ["beta"]
    batch_values = {"beta": ["true", "false"]}
    batch_list_values = {**batch_values, "limit": list_values["limit"], "after_id": [t.batch_id, "msgbatch_nosuchbatch"],
                         "before_id": [t.batch_id]}  # fmt: skip

    @st.composite
    def batch_create_case(draw: st.DrawFn) -> Case:
        body = draw(encoded(draw(batch_bodies(models)), large))
        return Case("POST /v1/messages/batches", "POST", batches, draw(beta_noise), draw(api()), body)

    def batch_id_case(route: str, method: str, suffix: str = "") -> st.SearchStrategy[Case]:
        """Cancel and delete: no body of their own, but one may come."""

        @st.composite
        def case(draw: st.DrawFn) -> Case:
            body = draw(st.sampled_from([None, None, None, b"", b"{}", b"null", b"\xff", b'{"requests":[]}']))
            path = f"{batches}/{draw(batch_ids)}{suffix}"
            return Case(route, method, path, draw(beta_noise), draw(api(content_type=body is not None)), body)

        return case()

    files = "/v1/files"
    file_ids = weighted((4, _ids([t.file_id] * 2)), (1, st.sampled_from(FILE_IDS)))

    def file_headers(draw: st.DrawFn, content_type: bytes | None = None) -> tuple[tuple[bytes, bytes], ...]:
        """An API key's headers, mostly with the files beta (without it, the generally available shapes)."""
        headers = list(draw(api(content_type=False)))
        if draw(st.integers(0, 3)):
            headers.append((b"anthropic-beta", FILES_BETA.encode()))
        if content_type is not None:
            headers.append((b"content-type", content_type))
        return tuple(headers)

    @st.composite
    def file_upload_case(draw: st.DrawFn) -> Case:
        content_type, body = draw(upload_bodies())
        return Case("POST /v1/files", "POST", files, draw(beta_noise), file_headers(draw, content_type), body)

    def file_get_case(route: str, paths: st.SearchStrategy[str], names: list[str], values: dict | None = None) -> st.SearchStrategy[Case]:
        @st.composite
        def case(draw: st.DrawFn) -> Case:
            method = draw(st.sampled_from(["GET"] * 9 + ["HEAD"]))
            return Case(route, method, draw(paths), draw(query(names, values)), file_headers(draw))

        return case()

    @st.composite
    def file_delete_case(draw: st.DrawFn) -> Case:
        body = draw(st.sampled_from([None, None, None, b"", b"{}", b"\xff"]))
        path = f"{files}/{draw(file_ids)}"
        return Case("DELETE /v1/files/{id}", "DELETE", path, draw(beta_noise), file_headers(draw), body)

    file_list_values = {"limit": list_values["limit"], "after_id": [t.file_id, "file_nosuchfile"], "before_id": [t.file_id],
                        "page": [quote(page, safe="") for page in PAGES], "ids": [t.file_id, "file_x", "%00"],
                        "ids[]": [t.file_id], "scope_id": ["sesn_1", ""]}  # fmt: skip

    @st.composite
    def unknown_case(draw: st.DrawFn) -> Case:
        method = draw(st.sampled_from(methods))
        headers = draw(st.one_of(api(), admin()))
        body = draw(st.sampled_from([None, b"", b"{}", b'{"model":"x"}', b"\xff"]))
        return Case("unknown path or method", method, draw(st.sampled_from(paths)), draw(query(["x"])), headers, body)

    return {
        "POST /v1/messages": messages_case("POST /v1/messages", "/v1/messages"),
        "POST /v1/messages (stream)": messages_case("POST /v1/messages (stream)", "/v1/messages", stream=True),
        "POST /v1/messages/count_tokens": messages_case("POST /v1/messages/count_tokens", "/v1/messages/count_tokens", count=True),
        "GET /v1/models": get_case("GET /v1/models", st.just("/v1/models"), api, ["limit", "after_id", "before_id"], {"after_id": list(models)}),
        "GET /v1/models/{id}": get_case("GET /v1/models/{id}", model_ids.map(lambda m: f"/v1/models/{m}"), api, []),
        "GET /v1/organizations/me": get_case("GET /v1/organizations/me", st.just(f"{o}/me"), admin, []),
        "GET /v1/organizations/workspaces": get_case("GET /v1/organizations/workspaces", st.just(f"{o}/workspaces"), admin, ["limit", "after_id", "before_id", "include_archived"], list_values),
        "POST /v1/organizations/workspaces": body_case("POST /v1/organizations/workspaces", st.just(f"{o}/workspaces"), workspace),
        "GET /v1/organizations/workspaces/{id}": get_case("GET /v1/organizations/workspaces/{id}", _ids([t.workspace_id, "default"]).map(lambda i: f"{o}/workspaces/{i}"), admin, []),
        "POST /v1/organizations/workspaces/{id}": body_case("POST /v1/organizations/workspaces/{id}", own_workspace.map(lambda i: f"{o}/workspaces/{i}"), workspace_update),
        "POST /v1/organizations/workspaces/{id}/archive": body_case("POST /v1/organizations/workspaces/{id}/archive", own_workspace.map(lambda i: f"{o}/workspaces/{i}/archive"), st.just({})),
        "GET /v1/organizations/api_keys": get_case("GET /v1/organizations/api_keys", st.just(f"{o}/api_keys"), admin, ["limit", "after_id", "before_id", "workspace_id", "status"], list_values),
        "POST /v1/organizations/api_keys": body_case("POST /v1/organizations/api_keys", st.just(f"{o}/api_keys"), key_create),
        "GET /v1/organizations/api_keys/{id}": get_case("GET /v1/organizations/api_keys/{id}", own_key.map(lambda i: f"{o}/api_keys/{i}"), admin, []),
        "POST /v1/organizations/api_keys/{id}": body_case("POST /v1/organizations/api_keys/{id}", own_key.map(lambda i: f"{o}/api_keys/{i}"), key_update),
        "GET /v1/organizations/usage_report/messages": report_case("GET /v1/organizations/usage_report/messages", f"{o}/usage_report/messages"),
        "GET /v1/organizations/cost_report": report_case("GET /v1/organizations/cost_report", f"{o}/cost_report"),
        "GET /metrics": get_case("GET /metrics", st.just("/metrics"), api, ["name[]", "format"]),
        "POST /v1/messages/batches": batch_create_case(),
        "GET /v1/messages/batches": get_case("GET /v1/messages/batches", st.just(batches), api, ["limit", "after_id", "before_id", *batch_query], batch_list_values),
        "GET /v1/messages/batches/{id}": get_case("GET /v1/messages/batches/{id}", batch_ids.map(lambda i: f"{batches}/{i}"), api, batch_query, batch_values),
        "GET /v1/messages/batches/{id}/results": get_case("GET /v1/messages/batches/{id}/results", batch_ids.map(lambda i: f"{batches}/{i}/results"), api, batch_query, batch_values),
        "POST /v1/messages/batches/{id}/cancel": batch_id_case("POST /v1/messages/batches/{id}/cancel", "POST", "/cancel"),
        "DELETE /v1/messages/batches/{id}": batch_id_case("DELETE /v1/messages/batches/{id}", "DELETE"),  # last: it ends the target
        "POST /v1/files": file_upload_case(),
        "GET /v1/files": file_get_case("GET /v1/files", st.just(files), ["limit", "after_id", "before_id", "page", "ids", "ids[]", "scope_id"], file_list_values),
        "GET /v1/files/{id}": file_get_case("GET /v1/files/{id}", file_ids.map(lambda i: f"{files}/{i}"), ["beta"], batch_values),
        "GET /v1/files/{id}/content": file_get_case("GET /v1/files/{id}/content", file_ids.map(lambda i: f"{files}/{i}/content"), ["beta"], batch_values),
        "DELETE /v1/files/{id}": file_delete_case(),  # last of the files: it may delete the target
        "unknown path or method": unknown_case(),
    }  # fmt: skip


def any_case(targets: Targets, large: bool = False) -> st.SearchStrategy[Case]:
    """A case for any route; the Messages API's routes drawn more often than the others."""
    routes = strategies(targets, large)
    weights = {"POST /v1/messages": 8, "POST /v1/messages (stream)": 4, "POST /v1/messages/count_tokens": 4}
    names = [route for route in routes for _ in range(weights.get(route, 1))]
    return st.sampled_from(names).flatmap(lambda route: routes[route])
