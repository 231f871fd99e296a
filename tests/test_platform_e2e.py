"""The platform end to end (spec §2, §7, §9, §1.4): real servers, the real model, both backends.

Each test runs twice: on SQLite with in-process rate limits, and on PostgreSQL with Redis buckets.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from conftest import COUNTING
from platform_backends import REDIS_URL, postgres_schema, redis_prefix
from platform_server import BACKENDS, Platform, launch, platform, stop

ASK = {"model": "claude-haiku-4-5", "max_tokens": 3, "messages": [{"role": "user", "content": "Say hi"}]}


@pytest.fixture(scope="module", params=BACKENDS)
def plat(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp(request.param)
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite-memory":
            url, prefix = f"sqlite:///{root / 'data' / 'missive.db'}", "unused:"
        else:
            url, prefix = stack.enter_context(postgres_schema()), stack.enter_context(redis_prefix())
        yield stack.enter_context(platform(root, request.param, url, prefix, REDIS_URL))


def workspace(plat: Platform, **fields: object) -> dict:
    with plat.admin() as admin:
        response = admin.post("/v1/organizations/workspaces", json={"name": "team", **fields})
    assert response.status_code == 200, response.text
    return response.json()


def new_key(plat: Platform, workspace_id: str, **fields: object) -> tuple[str, str]:
    with plat.admin() as admin:
        response = admin.post(
            "/v1/organizations/api_keys", json={"name": "k", "workspace_id": workspace_id, **fields}
        )
    assert response.status_code == 200, response.text
    return response.json()["id"], response.json()["key"]


def usage_of(plat: Platform, key_id: str) -> dict:
    start = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with plat.admin() as admin:
        report = admin.get(
            "/v1/organizations/usage_report/messages",
            params={"starting_at": start, "bucket_width": "1h", "limit": 3, "api_key_ids[]": key_id},
        ).json()
    totals = {"uncached_input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}
    for bucket in report["data"]:
        for row in bucket["results"]:
            for name in totals:
                totals[name] += row[name]
    return totals


def ledger_rows(plat: Platform, key_id: str) -> list[dict]:
    engine = sa.create_engine(plat.database_url)
    with engine.connect() as conn:
        rows = (
            conn.execute(sa.text("SELECT * FROM usage_records WHERE key_id = :k"), {"k": key_id})
            .mappings()
            .all()
        )
    engine.dispose()
    return [dict(row) for row in rows]


def test_parallel_requests_never_exceed_the_workspace_rpm(plat: Platform) -> None:
    ws = workspace(plat, rate_limit_tier="tight")  # 5 requests per minute
    key_id, key = new_key(plat, ws["id"])

    def send(_: int) -> httpx.Response:
        with plat.http(key) as http:
            return http.post("/v1/messages", json={**ASK, "max_tokens": 1})

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(send, range(12)))
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(limited) == 12
    # admissions happen as the engine takes each request; the bucket refills 5/60 per second meanwhile
    admitted = sorted(_utc(row["created_at"]) for row in ledger_rows(plat, key_id))
    refilled = int((admitted[-1] - admitted[0]).total_seconds() * 5 / 60)
    assert 5 <= len(ok) == len(admitted) <= 5 + refilled
    for response in limited:
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert "5 requests per minute" in response.json()["error"]["message"]
        assert 1 <= int(response.headers["retry-after"]) <= 12
        assert response.headers["x-should-retry"] == "true"
        assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    # a response's headers show the bucket as it is when the response is sent
    remaining = [int(r.headers["anthropic-ratelimit-requests-remaining"]) for r in ok]
    assert max(remaining) <= 4 and (refilled or min(remaining) == 0)


def _utc(value: datetime | str) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def test_rate_limit_headers_on_every_response(plat: Platform) -> None:
    ws = workspace(plat, rate_limit_tier="tight")  # 5 requests a minute: one back every 12 s
    _, key = new_key(plat, ws["id"])
    began = time.monotonic()

    def remaining(response: httpx.Response, expected: int, per_minute: int = 5) -> None:
        """Exactly `expected`, plus what refilled meanwhile (nothing, unless this machine is very slow)."""
        refilled = (time.monotonic() - began) * per_minute / 60
        assert 0 <= int(response.headers["anthropic-ratelimit-requests-remaining"]) - expected <= refilled

    with plat.http(key) as http:
        sent = datetime.now(UTC)
        first = http.post("/v1/messages", json=ASK)
        received = datetime.now(UTC)
        assert first.headers["anthropic-ratelimit-requests-limit"] == "5"
        remaining(first, 4)
        assert first.headers["anthropic-ratelimit-input-tokens-limit"] == "1000000"
        assert first.headers["anthropic-ratelimit-tokens-limit"] == "2000000"  # input + output
        reset = datetime.fromisoformat(first.headers["anthropic-ratelimit-requests-reset"])
        # one request comes back in 12 s, counted from its admission (between sending and receiving)
        assert sent + timedelta(seconds=11) <= reset <= received + timedelta(seconds=13)
        invalid = http.post("/v1/messages", json={**ASK, "max_tokens": "many"})
        assert invalid.status_code == 400
        remaining(invalid, 4)  # refused before admission: nothing taken
        unknown = http.post("/v1/messages", json={**ASK, "model": "nope"})
        assert unknown.status_code == 404 and "anthropic-ratelimit-requests-limit" in unknown.headers
        with http.stream("POST", "/v1/messages", json={**ASK, "stream": True}) as stream:
            remaining(stream, 3)
            assert "event: message_stop" in stream.read().decode()
        began = time.monotonic()
        counted = [
            http.post("/v1/messages/count_tokens", json={"model": ASK["model"], "messages": ASK["messages"]})
            for _ in range(4)
        ]
    assert counted[0].headers["anthropic-ratelimit-requests-limit"] == "3"  # its own RPM: 3
    if time.monotonic() - began < 15:
        assert [r.status_code for r in counted] == [200, 200, 200, 429]
        assert "retry-after" in counted[3].headers
    for response, expected in zip(counted, (2, 1, 0, 0), strict=True):
        remaining(response, expected, per_minute=3)


def test_itpm_counts_input_and_a_large_prompt_goes_into_debt(plat: Platform) -> None:
    ws = workspace(plat, rate_limit_tier="small-itpm")  # 60 input tokens per minute: one per second
    _, key = new_key(plat, ws["id"])
    prompt = {**ASK, "messages": [{"role": "user", "content": "word " * 100}]}
    with plat.http(key) as http:
        began = time.monotonic()
        first = http.post("/v1/messages", json=prompt)  # larger than the bucket: admitted on a full bucket
        assert first.status_code == 200
        used = first.json()["usage"]["input_tokens"]
        second = http.post("/v1/messages", json=prompt)
        elapsed = time.monotonic() - began
    assert second.status_code == 429
    assert "60 input tokens per minute" in second.json()["error"]["message"]
    # the bucket went `used - 60` into debt and must refill to 60 at 1 token/s: `used` seconds, less time passed
    assert used - elapsed - 1 <= int(second.headers["retry-after"]) <= used + 1


def test_ledger_totals_equal_the_usage_responses_reported(plat: Platform) -> None:
    ws = workspace(plat)
    key_id, key = new_key(plat, ws["id"])
    reported = {"input": 0, "output": 0}
    with plat.http(key) as http:
        for max_tokens in (1, 4, 9):
            usage = http.post("/v1/messages", json={**ASK, "max_tokens": max_tokens}).json()["usage"]
            reported["input"] += usage["input_tokens"]
            reported["output"] += usage["output_tokens"]
        for max_tokens in (2, 6):
            with http.stream(
                "POST", "/v1/messages", json={**ASK, "max_tokens": max_tokens, "stream": True}
            ) as s:
                body = s.read().decode()
            events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]
            start = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
            delta = next(e for e in events if e["type"] == "message_delta")["usage"]
            reported["input"] += start["input_tokens"]
            reported["output"] += delta["output_tokens"]
    totals = usage_of(plat, key_id)
    assert totals["uncached_input_tokens"] == reported["input"]
    assert totals["output_tokens"] == reported["output"]
    rows = ledger_rows(plat, key_id)
    assert len(rows) == 5 and {row["status"] for row in rows} == {"succeeded"}
    # priced at $1000 / $2000 per million: cost in pico-USD is tokens x 1e9 / 2e9
    assert sum(row["cost"] for row in rows) == reported["input"] * 10**9 + reported["output"] * 2 * 10**9
    start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    with plat.admin() as admin:
        cost = admin.get(
            "/v1/organizations/cost_report",
            params={"starting_at": start, "group_by[]": "workspace_id", "limit": 3},
        ).json()
    amounts = [
        float(r["amount"]) for b in cost["data"] for r in b["results"] if r["workspace_id"] == ws["id"]
    ]
    assert sum(amounts) == pytest.approx((reported["input"] * 1000 + reported["output"] * 2000) / 1e6 * 100)


def test_a_revoked_key_is_refused_at_once(plat: Platform) -> None:
    key_id, key = new_key(plat, "default")
    with plat.http(key) as http, plat.admin() as admin:
        assert http.post("/v1/messages", json=ASK).status_code == 200
        assert admin.post(f"/v1/organizations/api_keys/{key_id}", json={"status": "inactive"}).json()[
            "status"
        ] == ("inactive")
        refused = http.post("/v1/messages", json=ASK)
        assert refused.status_code == 401 and refused.json()["error"]["message"] == "invalid x-api-key"
        assert (
            admin.post(f"/v1/organizations/api_keys/{key_id}", json={"status": "active"}).status_code == 200
        )
        assert http.post("/v1/messages", json=ASK).status_code == 200
        renamed = admin.post(
            f"/v1/organizations/api_keys/{key_id}", json={"name": "renamed", "status": "archived"}
        )
        assert renamed.json()["name"] == "renamed" and renamed.json()["status"] == "archived"
        assert http.post("/v1/messages", json=ASK).status_code == 401
        assert (
            admin.post(f"/v1/organizations/api_keys/{key_id}", json={"status": "active"}).status_code == 400
        )
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    _, expiring = new_key(plat, "default", expires_at=soon)
    with plat.http(expiring) as http:
        assert http.post("/v1/messages", json=ASK).status_code == 200
        time.sleep(1.2)
        assert http.post("/v1/messages", json=ASK).status_code == 401


def test_one_workspace_never_sees_another(plat: Platform) -> None:
    team_a, team_b = workspace(plat, name="a"), workspace(plat, name="b")
    key_a, secret_a = new_key(plat, team_a["id"])
    key_b, secret_b = new_key(plat, team_b["id"])
    for secret in (secret_a, secret_b):
        with plat.http(secret) as http:
            assert http.post("/v1/messages", json=ASK).status_code == 200
    made = plat.server.cli("keys", "create", "--admin", "--name", "a admin", "--workspace", team_a["id"])
    assert made.returncode == 0, made.stderr
    scoped = {"anthropic-version": "2023-06-01", "x-api-key": made.stdout.strip().splitlines()[-1]}
    with httpx.Client(base_url=plat.server.base_url, headers=scoped) as admin_a:
        keys = admin_a.get("/v1/organizations/api_keys", params={"limit": 1000}).json()["data"]
        assert {key["workspace_id"] for key in keys} == {team_a["id"]} and key_a in {
            key["id"] for key in keys
        }
        assert (
            admin_a.get("/v1/organizations/api_keys", params={"workspace_id": team_b["id"]}).json()["data"]
            == []
        )
        assert admin_a.get(f"/v1/organizations/api_keys/{key_b}").status_code == 404
        assert (
            admin_a.post(f"/v1/organizations/api_keys/{key_b}", json={"status": "inactive"}).status_code
            == 404
        )
        assert admin_a.get(f"/v1/organizations/workspaces/{team_b['id']}").status_code == 404
        assert [ws["id"] for ws in admin_a.get("/v1/organizations/workspaces").json()["data"]] == [
            team_a["id"]
        ]
        assert admin_a.post("/v1/organizations/workspaces", json={"name": "x"}).status_code == 403
        made_b = admin_a.post("/v1/organizations/api_keys", json={"name": "x", "workspace_id": team_b["id"]})
        assert made_b.status_code == 404
        start = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for params in ({}, {"workspace_ids[]": team_b["id"]}, {"api_key_ids[]": key_b}):
            report = admin_a.get(
                "/v1/organizations/usage_report/messages",
                params={
                    "starting_at": start,
                    "bucket_width": "1h",
                    "group_by[]": ["workspace_id", "api_key_id"],
                    **params,
                },
            ).json()
            assert "data" in report, report
            seen = {row["workspace_id"] for bucket in report["data"] for row in bucket["results"]}
            assert seen <= {team_a["id"]}
            assert team_b["id"] not in str(report) and key_b not in str(report)
    with plat.http(secret_a) as http:  # an API key is not an admin key, and the other way round
        assert http.get("/v1/organizations/api_keys").status_code == 403
    with httpx.Client(base_url=plat.server.base_url, headers=scoped) as admin_a:
        assert admin_a.post("/v1/messages", json=ASK).status_code == 401


def test_credit_balance_and_monthly_spend_limit(plat: Platform) -> None:
    prepaid = workspace(plat, credit_balance="0.01")  # a request here costs about $0.02
    _, key = new_key(plat, prepaid["id"])
    with plat.http(key) as http, plat.admin() as admin:
        assert http.post("/v1/messages", json=ASK).status_code == 200
        refused = http.post("/v1/messages", json=ASK)
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"
        assert "credit balance is too low" in refused.json()["error"]["message"]
        balance = admin.get(f"/v1/organizations/workspaces/{prepaid['id']}").json()["credit_balance"]
        assert float(balance) < 0  # the request in flight was finished and charged
        admin.post(f"/v1/organizations/workspaces/{prepaid['id']}", json={"credit_balance": "5"})
        assert http.post("/v1/messages", json=ASK).status_code == 200
    capped = workspace(plat, monthly_spend_limit="0.01")
    _, key = new_key(plat, capped["id"])
    with plat.http(key) as http, plat.admin() as admin:
        assert http.post("/v1/messages", json=ASK).status_code == 200
        time.sleep(1.1)  # the month's spend is re-read from the ledger at most once a second
        refused = http.post("/v1/messages", json=ASK)
        assert refused.status_code == 400
        assert "reached your specified workspace API usage limits" in refused.json()["error"]["message"]
        spent = admin.get(f"/v1/organizations/workspaces/{capped['id']}").json()["spent_this_month"]
        assert float(spent) > 0.01
        admin.post(f"/v1/organizations/workspaces/{capped['id']}", json={"monthly_spend_limit": None})
        assert http.post("/v1/messages", json=ASK).status_code == 200


def test_a_request_in_flight_when_the_process_dies_is_accounted_once(plat: Platform, tmp_path: Path) -> None:
    # a second front end on the same store is killed mid-stream; the first settles what it left
    process, server = launch(tmp_path, plat.config, "crash.log")
    try:
        key_id, key = new_key(plat, "default")
        with httpx.Client(
            base_url=server.base_url,
            headers={"anthropic-version": "2023-06-01", "x-api-key": key},
            timeout=60,
        ) as http:
            request = {
                **ASK,
                "max_tokens": 2000,
                "stream": True,
                "temperature": 0,
                "messages": COUNTING,  # runs far longer than the test, so it is cut mid-stream
            }
            with http.stream("POST", "/v1/messages", json=request) as stream:
                pieces = 0
                for line in stream.iter_lines():
                    pieces += line.startswith("data: ") and "text_delta" in line
                    if pieces >= 40:
                        time.sleep(0.5)  # past a checkpoint
                        stop(process, hard=True)
                        break
    finally:
        stop(process, hard=True)
    rows = ledger_rows(plat, key_id)
    assert len(rows) == 1 and rows[0]["status"] == "in_flight"
    deadline = time.monotonic() + 15  # the running server sees the dead front end and settles its record
    while rows[0]["status"] == "in_flight" and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = ledger_rows(plat, key_id)
    assert rows[0]["status"] == "interrupted"
    assert rows[0]["output_tokens"] >= 40 and rows[0]["input_tokens"] > 0
    assert rows[0]["cost"] == rows[0]["input_tokens"] * 10**9 + rows[0]["output_tokens"] * 2 * 10**9
    time.sleep(1.5)  # later recoveries change nothing
    assert ledger_rows(plat, key_id) == rows


def test_hostile_values_get_4xx_not_500(plat: Platform) -> None:
    with plat.admin() as admin:
        assert admin.get("/v1/organizations/api_keys/apikey_%00x").status_code == 404
        assert admin.get("/v1/organizations/workspaces/%00").status_code == 404
        start = {"starting_at": "2026-01-01T00:00:00Z"}
        assert (
            admin.get(
                "/v1/organizations/usage_report/messages", params={**start, "models[]": "a\x00"}
            ).status_code
            == 400
        )
        assert (
            admin.get(
                "/v1/organizations/usage_report/messages", params={**start, "group_by[]": "x"}
            ).status_code
            == 400
        )
        assert (
            admin.get("/v1/organizations/cost_report", params={**start, "bucket_width": "1h"}).status_code
            == 400
        )
        assert admin.post("/v1/organizations/workspaces", json={"name": "a\x00b"}).status_code == 400
        assert (
            admin.post(
                "/v1/organizations/workspaces", json={"name": "a", "rate_limit_tier": "gold"}
            ).status_code
            == 400
        )
        assert (
            admin.post(
                "/v1/organizations/workspaces", json={"name": "a", "credit_balance": "lots"}
            ).status_code
            == 400
        )
        assert (
            admin.post("/v1/organizations/api_keys", json={"name": "k", "workspace_id": "nope"}).status_code
            == 400
        )
    with plat.http() as http:
        odd = {**ASK, "max_tokens": 1, "model": "claude-" + "\x00" * 300}
        assert http.post("/v1/messages", json=odd).status_code == 200


def test_two_front_ends_share_one_set_of_buckets(plat: Platform, tmp_path: Path) -> None:
    if "redis" not in plat.config.split("backend = ")[1].split("\n")[0]:
        pytest.skip("in-process buckets belong to one front end; sharing needs the Redis backend")
    ws = workspace(plat, rate_limit_tier="tight")  # 5 requests per minute, across every front end
    key_id, key = new_key(plat, ws["id"])
    process, other = launch(tmp_path, plat.config, "second.log")
    try:
        urls = [plat.server.base_url, other.base_url]

        def send(index: int) -> int:
            headers = {"anthropic-version": "2023-06-01", "x-api-key": key}
            return httpx.post(
                f"{urls[index % 2]}/v1/messages", json={**ASK, "max_tokens": 1}, headers=headers, timeout=60
            ).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(send, range(12)))
    finally:
        stop(process)
    admitted = sorted(_utc(row["created_at"]) for row in ledger_rows(plat, key_id))
    refilled = int((admitted[-1] - admitted[0]).total_seconds() * 5 / 60)
    assert 5 <= codes.count(200) == len(admitted) <= 5 + refilled
    assert codes.count(429) == 12 - codes.count(200)


def test_a_stream_the_client_leaves_is_settled_as_cancelled(plat: Platform) -> None:
    key_id, key = new_key(plat, "default")
    request = {
        **ASK,
        "max_tokens": 1500,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell a long tale."}],
    }
    with plat.http(key) as http, http.stream("POST", "/v1/messages", json=request) as stream:
        deltas = 0
        for line in stream.iter_lines():
            deltas += "text_delta" in line
            if deltas == 5:
                break  # and hang up
    deadline = time.monotonic() + 15
    rows = ledger_rows(plat, key_id)
    while (not rows or rows[0]["status"] == "in_flight") and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = ledger_rows(plat, key_id)
    assert len(rows) == 1 and rows[0]["status"] == "cancelled"
    assert 5 <= rows[0]["output_tokens"] < 1500 and rows[0]["settled_at"] is not None
    assert rows[0]["cost"] == rows[0]["input_tokens"] * 10**9 + rows[0]["output_tokens"] * 2 * 10**9
