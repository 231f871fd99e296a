"""The Admin API against a hostile client (issue 11): values at and past the edges of what Missive can
hold get a 400 that names the field, never a 500; every route refuses a body past the one size limit
with a 413; and a request that is not valid HTTP gets an Anthropic error with a `request-id`.

Each case here was a 500 (or plain text) once. They run against the real server of the session.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import Server

O = "/v1/organizations"
REPORTS = [f"{O}/usage_report/messages", f"{O}/cost_report"]
RECENT = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
FAR_DATES = [
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "9998-12-31T23:59:59-14:00",  # 9999-01-01 in UTC: just past the range
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
]
DATE_RANGE = "between 1970-01-01T00:00:00Z and 9998-12-31T23:59:59Z"


def _page(text: str) -> str:
    return "page_" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


PAGES = [
    "page_MTAwMDAwMDAwMDAwMDAwMDAw",  # 10**17
    _page(str(2**63)),
    _page(str(10**400)),
    _page("-86400"),
    _page("1e400"),
    _page(" 86400"),
    _page("86401"),  # not on a bucket boundary
    _page("²"),
    "page_%%%",
    "page_",
    "garbage",
    "page_" + "A" * 5000,
]
AMOUNTS = ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "-1", "-0.01", "9223372.04", "9223372036854775807",
           "1000000.01", "1e3", "1_000", " 5 ", "0x10", "", "1" * 60]  # fmt: skip


def error_of(response: httpx.Response, status: int = 400, error_type: str = "invalid_request_error") -> str:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["request-id"].startswith("req_")
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == error_type
    assert payload["request_id"] == response.headers["request-id"]
    return payload["error"]["message"]


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    made = server.cli("keys", "create", "--admin", "--name", "hostile admin")
    assert made.returncode == 0, made.stderr
    headers = {"x-api-key": made.stdout.strip().splitlines()[-1], "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def workspace_id(admin: httpx.Client) -> str:
    response = admin.post(f"{O}/workspaces", json={"name": "hostile"})
    assert response.status_code == 200, response.text
    return response.json()["id"]


# --- reports: dates, cursors, limits ------------------------------------------------------------------


@pytest.mark.parametrize("path", REPORTS)
@pytest.mark.parametrize("date", FAR_DATES)
def test_report_dates_past_the_range_are_400(admin: httpx.Client, path: str, date: str) -> None:
    message = error_of(admin.get(path, params={"starting_at": date}))
    assert message == f"starting_at: Input should be a datetime {DATE_RANGE}"
    message = error_of(admin.get(path, params={"starting_at": RECENT, "ending_at": date}))
    assert message == f"ending_at: Input should be a datetime {DATE_RANGE}"


@pytest.mark.parametrize("path", REPORTS)
def test_report_at_the_last_accepted_day_renders(admin: httpx.Client, path: str) -> None:
    response = admin.get(path, params={"starting_at": "9998-12-31T23:59:59Z", "limit": "31"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data[0]["starting_at"] == "9998-12-31T00:00:00Z" and data[-1]["ending_at"] == "9999-01-31T00:00:00Z"
    early = admin.get(path, params={"starting_at": "1970-01-01T00:00:00Z", "ending_at": "1970-01-02T00:00:00Z"})
    assert early.status_code == 200 and early.json()["data"][0]["starting_at"] == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize("path", REPORTS)
@pytest.mark.parametrize("page", PAGES)
def test_report_bad_page_cursors_are_400(admin: httpx.Client, path: str, page: str) -> None:
    message = error_of(admin.get(path, params={"starting_at": RECENT, "page": page}))
    assert message.startswith("page: invalid page token")


def test_report_next_page_still_works(admin: httpx.Client) -> None:
    start = "2026-01-01T00:00:00Z"
    first = admin.get(REPORTS[0], params={"starting_at": start, "ending_at": "2026-01-03T00:00:00Z", "bucket_width": "1h"})
    assert first.status_code == 200 and first.json()["has_more"]
    params = {"starting_at": start, "ending_at": "2026-01-03T00:00:00Z", "bucket_width": "1h"}
    second = admin.get(REPORTS[0], params={**params, "page": first.json()["next_page"]})
    assert second.status_code == 200, second.text
    assert second.json()["data"][0]["starting_at"] == "2026-01-02T00:00:00Z" and not second.json()["has_more"]


@pytest.mark.parametrize("limit", ["99999999999999999999", "9" * 5000, "-1", "0", "1e3", "1.5", "²", "", "x"])
def test_limits_out_of_range_or_not_integers_are_400(admin: httpx.Client, limit: str) -> None:
    for path in REPORTS:
        assert error_of(admin.get(path, params={"starting_at": RECENT, "limit": limit})).startswith("limit: ")
    for path in (f"{O}/workspaces", f"{O}/api_keys"):
        assert error_of(admin.get(path, params={"limit": limit})).startswith("limit: ")


def test_list_queries_refuse_odd_values(admin: httpx.Client) -> None:
    assert error_of(admin.get(f"{O}/api_keys", params={"status": "deleted"})).startswith("status: ")
    assert error_of(admin.get(f"{O}/api_keys", params={"workspace_id": "a\x00"})).startswith("workspace_id: ")
    assert error_of(admin.get(f"{O}/workspaces", params={"include_archived": "maybe"})).startswith(
        "include_archived: "
    )
    assert error_of(admin.get(REPORTS[0], params={"starting_at": RECENT, "bucket_width": "7d"})).startswith(
        "bucket_width: "
    )


# --- workspaces: amounts and tiers --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["monthly_spend_limit", "credit_balance"])
@pytest.mark.parametrize("amount", [*AMOUNTS, 5, 1.5, True, {"usd": "1"}])
def test_amounts_past_the_range_are_400(admin: httpx.Client, workspace_id: str, field: str, amount: object) -> None:
    created = admin.post(f"{O}/workspaces", json={"name": "team", field: amount})
    assert error_of(created).startswith(f"{field}: ")
    updated = admin.post(f"{O}/workspaces/{workspace_id}", json={field: amount})
    assert error_of(updated).startswith(f"{field}: ")


def test_amount_messages_say_the_rule(admin: httpx.Client) -> None:
    said = error_of(admin.post(f"{O}/workspaces", json={"name": "t", "monthly_spend_limit": "9223372.04"}))
    assert said == "monthly_spend_limit: Input should be at most 1000000.00 (USD)"
    said = error_of(admin.post(f"{O}/workspaces", json={"name": "t", "credit_balance": "-1"}))
    assert said == "credit_balance: Input should be greater than or equal to 0"
    said = error_of(admin.post(f"{O}/workspaces", json={"name": "t", "credit_balance": "NaN"}))
    assert said == 'credit_balance: Input should be a decimal amount in USD, e.g. "100.00"'


def test_the_largest_amount_is_taken(admin: httpx.Client, workspace_id: str) -> None:
    updated = admin.post(f"{O}/workspaces/{workspace_id}", json={"monthly_spend_limit": "1000000.00"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["monthly_spend_limit"] == "1000000.000000"
    cleared = admin.post(f"{O}/workspaces/{workspace_id}", json={"monthly_spend_limit": None})
    assert cleared.status_code == 200 and cleared.json()["monthly_spend_limit"] is None


@pytest.mark.parametrize("tier", ["gold", "t" * 10_000, "", "tier-1\x00"])
def test_unknown_tiers_are_400(admin: httpx.Client, tier: str) -> None:
    message = error_of(admin.post(f"{O}/workspaces", json={"name": "t", "rate_limit_tier": tier}))
    assert message.startswith("rate_limit_tier: ") and len(message) < 300


# --- keys: expiry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("expires_at", [*FAR_DATES, -1, 10**20, "+10000-01-01T00:00:00Z", "tomorrow"])
def test_key_expiry_past_the_range_is_400(admin: httpx.Client, expires_at: object) -> None:
    response = admin.post(f"{O}/api_keys", json={"name": "k", "expires_at": expires_at})
    assert error_of(response).startswith("expires_at: ")


def test_key_expiry_in_range_is_kept_in_utc(admin: httpx.Client, workspace_id: str) -> None:
    body = {"name": "k", "workspace_id": workspace_id, "expires_at": "9998-12-31T23:00:00-00:30"}
    response = admin.post(f"{O}/api_keys", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["expires_at"] == "9998-12-31T23:30:00Z" and response.json()["status"] == "active"


# --- ids ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("odd", ["%00", "%ff", "%C3%A9", "a" * 2000, "..%2F..", "x%0Ay", "99999999999999999999"])
def test_odd_ids_are_404(admin: httpx.Client, odd: str) -> None:
    for path in (f"{O}/workspaces/{odd}", f"{O}/api_keys/{odd}"):
        assert "not found" in error_of(admin.get(path), 404, "not_found_error").lower()
        assert "not found" in error_of(admin.post(path, json={"name": "x"}), 404, "not_found_error").lower()


@pytest.mark.parametrize("path", ["/v1/messages/", f"{O}/workspaces/", "/metrics/"])
def test_a_trailing_slash_is_a_404_not_a_redirect(admin: httpx.Client, path: str) -> None:
    method = "POST" if path == "/v1/messages/" else "GET"
    assert error_of(admin.request(method, path, json={}), 404, "not_found_error")


# --- one body-size limit on every route ------------------------------------------------------------------

HUGE = b'{"name": "' + b"a" * (33 * 1024 * 1024) + b'"}'


@pytest.mark.parametrize(
    "path",
    [f"{O}/workspaces", f"{O}/workspaces/default", f"{O}/api_keys", f"{O}/api_keys/apikey_x",
     "/v1/messages", "/v1/messages/count_tokens"],
)  # fmt: skip
def test_a_body_past_the_limit_is_413_on_every_route(server: Server, admin: httpx.Client, path: str) -> None:
    headers = {"x-api-key": server.api_key} if path.startswith("/v1/messages") else {}
    message = error_of(admin.post(path, content=HUGE, headers=headers), 413, "request_too_large")
    assert message == "Request exceeds the maximum allowed number of bytes."


def test_a_chunked_body_past_the_limit_is_413(admin: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(33):
            yield b"a" * (1024 * 1024)

    response = admin.post(f"{O}/workspaces", content=chunks())
    assert error_of(response, 413, "request_too_large") == "Request exceeds the maximum allowed number of bytes."


# --- malformed HTTP -------------------------------------------------------------------------------------

MALFORMED = {
    "two content-lengths": b"POST /v1/organizations/workspaces HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"Content-Length: 3\r\n\r\n{}",
    "bad chunk size": b"POST /v1/organizations/workspaces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\n{}\r\n0\r\n\r\n",
    "header without a colon": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "NUL in a header": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Odd: a\x00b\r\n\r\n",
    "NUL in the request line": b"GET /v1/mo\x00dels HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
    "no Host": b"GET /v1/models HTTP/1.1\r\n\r\n",
    "space before the colon": b"GET /v1/models HTTP/1.1\r\nHost : x\r\n\r\n",
    "bad content-length": b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello to a plain port
}


def _raw(server: Server, data: bytes) -> bytes:
    url = urlsplit(server.base_url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes the connection after the 400
            answer += chunk
    return answer


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_http_gets_an_anthropic_400(server: Server, name: str) -> None:
    head, _, body = _raw(server, MALFORMED[name]).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 400 "), head
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in header_lines)}
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert headers["request-id"].startswith("req_")
    error = json.loads(body)
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith("Invalid HTTP request") and error["request_id"] == headers["request-id"]


def test_the_server_still_answers_after_malformed_http(server: Server, admin: httpx.Client) -> None:
    """Also when the app already runs, reading the body that turns out malformed: no traceback."""
    offset = len(server.log())
    key = admin.headers["x-api-key"].encode()
    reading = MALFORMED["bad chunk size"].replace(b"Host: x\r\n", b"Host: x\r\nx-api-key: " + key + b"\r\n")
    for data in [*MALFORMED.values(), reading]:
        _raw(server, data)
    assert admin.get(f"{O}/me").status_code == 200
    assert "Traceback" not in server.log()[offset:]
