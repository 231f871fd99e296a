"""Message batches through the official SDK against real servers with the real model (spec §13).

The session server runs the API's cases; a server of this module's own (priced, quick upkeep) runs
the ledger and crash cases, and two front ends on one PostgreSQL database share a batch.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import sqlalchemy as sa
from conftest import COUNTING, Server, launch, stop
from platform_backends import POSTGRES, postgres_schema

PRICED = """
default_model = "smollm2-135m-instruct"
{database}

[local]
threads = 1
parallel = 4

[[models]]
id = "smollm2-135m-instruct"
context_window = 2048
min_cache_tokens = 64

[ledger]
checkpoint_interval = 0.2
dead_after = 1.0

[batches]
poll_interval = 0.2
progress_interval = 1.0

[pricing.models.smollm2-135m-instruct]
input = 1000
output = 2000
"""
SHORT = {"model": "smollm2-135m-instruct", "max_tokens": 4, "temperature": 0}


def ask(text: str, **fields: Any) -> dict[str, Any]:
    return {**SHORT, "messages": [{"role": "user", "content": text}], **fields}


def wait_ended(client: anthropic.Anthropic, batch_id: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} did not end within {timeout} s: {batch}"
        time.sleep(0.3)


def results_of(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line in client.messages.batches.results(batch_id):
        assert line.custom_id not in found, f"{line.custom_id} twice in the results"
        found[line.custom_id] = line.result
    return found


def admin_key(server: Server) -> str:
    made = server.cli("keys", "create", "--admin", "--name", "batches admin")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def other_workspace_key(server: Server) -> str:
    headers = {"x-api-key": admin_key(server), "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as admin:
        workspace = admin.post("/v1/organizations/workspaces", json={"name": "other team"}).json()
        key = admin.post("/v1/organizations/api_keys", json={"name": "other", "workspace_id": workspace["id"]})
    return key.json()["key"]


def ledger(url: str, where: str = "service_tier = 'batch'") -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT * FROM usage_records WHERE {where}")).mappings().all()
    engine.dispose()
    return [dict(row) for row in rows]


def query(url: str, sql: str) -> list[Any]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql)).all()
    engine.dispose()
    return rows


# --- the API, on the session server ------------------------------------------------------------------


def test_a_batch_runs_to_its_end_and_each_result_is_a_message(client: anthropic.Anthropic) -> None:
    weather = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    requests = [{"custom_id": f"q-{i}", "params": ask(f"Say the number {i}.")} for i in range(5)]
    requests.append({"custom_id": "tool", "params": {
        **ask("Weather in Paris?"), "max_tokens": 40, "tools": [weather],
        "tool_choice": {"type": "tool", "name": "get_weather"}}})  # fmt: skip
    requests.append({"custom_id": "too-long", "params": ask("hi", max_tokens=10**6)})
    requests.append({"custom_id": "no-tokens", "params": ask("hi", max_tokens=0)})
    requests.append({"custom_id": "streams", "params": ask("hi", stream=True)})
    requests.append({"custom_id": "bad-role", "params": {**SHORT, "messages": [{"role": "robot", "content": "x"}]}})
    batch = client.messages.batches.create(requests=requests)
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == len(requests) and batch.request_counts.succeeded == 0
    assert batch.ended_at is None and batch.cancel_initiated_at is None and batch.archived_at is None
    assert (batch.expires_at - batch.created_at).total_seconds() == pytest.approx(86400, abs=2)

    ended = wait_ended(client, batch.id)
    assert ended.results_url == f"/v1/messages/batches/{batch.id}/results"  # the SDK joins it to its base URL
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.processing, counts.canceled, counts.expired) == (6, 4, 0, 0, 0)
    assert ended.ended_at is not None and ended.ended_at >= ended.created_at

    results = results_of(client, batch.id)
    assert set(results) == {item["custom_id"] for item in requests}
    for custom_id in [f"q-{i}" for i in range(5)] + ["tool"]:
        result = results[custom_id]
        assert result.type == "succeeded", (custom_id, result)
        message = result.message
        assert message.id.startswith("msg_") and message.role == "assistant" and message.model == SHORT["model"]
        assert message.usage.service_tier == "batch" and message.usage.input_tokens > 0
    call = results["tool"].message
    assert call.stop_reason == "tool_use" and call.content[0].type == "tool_use" and "city" in call.content[0].input
    for custom_id, needle in [("too-long", "max_tokens"), ("no-tokens", "max_tokens"), ("streams", "stream"),
                              ("bad-role", "messages.0.role")]:  # fmt: skip
        result = results[custom_id]
        assert result.type == "errored", (custom_id, result)
        assert result.error.type == "error" and result.error.error.type == "invalid_request_error"
        assert needle in result.error.error.message, result.error.error.message


def test_the_beta_namespace_reaches_the_same_batches(client: anthropic.Anthropic) -> None:
    batch = client.beta.messages.batches.create(requests=[{"custom_id": "one", "params": ask("Hi")}])
    assert client.messages.batches.retrieve(batch.id).id == batch.id
    wait_ended(client, batch.id)
    lines = list(client.beta.messages.batches.results(batch.id))
    assert [line.custom_id for line in lines] == ["one"] and lines[0].result.type == "succeeded"


@pytest.mark.parametrize(
    "requests, needle",
    [
        ([{"custom_id": "a", "params": ask("x")}, {"custom_id": "a", "params": ask("y")}], "requests.1.custom_id"),
        ([{"custom_id": "has space", "params": ask("x")}], "requests.0.custom_id"),
        ([{"custom_id": "x" * 65, "params": ask("x")}], "requests.0.custom_id"),
        ([{"custom_id": "", "params": ask("x")}], "requests.0.custom_id"),
        ([{"custom_id": "a"}], "requests.0.params"),
        ([{"custom_id": "a", "params": "text"}], "requests.0.params"),
        ([{"custom_id": "a", "params": ask("x"), "extra": 1}], "requests.0.extra"),
        ([], "requests"),
    ],
)
def test_a_malformed_batch_is_refused_at_create(http: httpx.Client, requests: list[Any], needle: str) -> None:
    response = http.post("/v1/messages/batches", json={"requests": requests})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith(needle), error
    assert response.headers["request-id"] == response.json()["request_id"]


def test_list_pages_newest_first_and_an_unknown_batch_is_a_404(client: anthropic.Anthropic) -> None:
    made = [client.messages.batches.create(requests=[{"custom_id": "x", "params": ask("Hi")}]).id for _ in range(3)]
    first = client.messages.batches.list(limit=2)
    assert [batch.id for batch in first.data] == made[::-1][:2] and first.has_more
    second = client.messages.batches.list(limit=2, after_id=first.last_id)
    assert second.data[0].id == made[0]
    back = client.messages.batches.list(limit=1, before_id=made[0])
    assert [batch.id for batch in back.data] == [made[1]]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_nosuchbatch")
    for batch_id in made:
        wait_ended(client, batch_id)


def test_cancel_stops_what_has_not_started_and_delete_waits_for_the_end(client: anthropic.Anthropic) -> None:
    requests = [{"custom_id": f"c{i}", "params": ask(f"Count to {i}.", max_tokens=30)} for i in range(40)]
    batch = client.messages.batches.create(requests=requests)
    with pytest.raises(anthropic.BadRequestError, match="cannot be deleted"):
        client.messages.batches.delete(batch.id)
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status in ("canceling", "ended") and canceling.cancel_initiated_at is not None
    ended = wait_ended(client, batch.id, timeout=60)
    counts = ended.request_counts
    assert counts.canceled > 0 and counts.succeeded + counts.canceled == 40 and counts.errored == 0
    results = results_of(client, batch.id)
    assert {result.type for result in results.values()} <= {"succeeded", "canceled"} and len(results) == 40
    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_another_workspace_sees_none_of_a_batch(server: Server, client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=[{"custom_id": "mine", "params": ask("Secret")}])
    wait_ended(client, batch.id)
    other = anthropic.Anthropic(base_url=server.base_url, api_key=other_workspace_key(server), max_retries=0)
    for attempt in (
        lambda: other.messages.batches.retrieve(batch.id),
        lambda: other.messages.batches.cancel(batch.id),
        lambda: other.messages.batches.delete(batch.id),
    ):
        with pytest.raises(anthropic.NotFoundError):
            attempt()
    with httpx.Client(base_url=server.base_url, timeout=30) as raw:
        response = raw.get(f"/v1/messages/batches/{batch.id}/results",
                           headers={"x-api-key": other.api_key, "anthropic-version": "2023-06-01"})  # fmt: skip
    assert response.status_code == 404 and "Secret" not in response.text
    assert batch.id not in [listed.id for listed in other.messages.batches.list(limit=1000).data]
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"


def test_a_shared_system_prompt_is_prefilled_once_and_read_from_the_cache(client: anthropic.Anthropic) -> None:
    system = [{"type": "text", "text": "You answer questions about the sea. " * 30, "cache_control": {"type": "ephemeral"}}]
    requests = [{"custom_id": f"s{i}", "params": ask(f"Question {i}: why is the sea salty?", system=system)}
                for i in range(4)]  # fmt: skip
    batch = client.messages.batches.create(requests=requests)
    wait_ended(client, batch.id)
    usages = [result.message.usage for result in results_of(client, batch.id).values()]
    writes = [usage for usage in usages if usage.cache_creation_input_tokens]
    reads = [usage for usage in usages if usage.cache_read_input_tokens]
    assert len(writes) == 1 and len(reads) == 3, usages
    assert reads[0].cache_read_input_tokens == writes[0].cache_creation_input_tokens


def test_interactive_requests_are_served_while_a_batch_runs(client: anthropic.Anthropic, server: Server) -> None:
    """The batch fills every slot with long generations; interactive requests still start at once, because
    batch work yields its slot at the next step (it is preempted, and resumes afterwards)."""
    long = {**SHORT, "max_tokens": 300, "messages": COUNTING}
    batch = client.messages.batches.create(requests=[{"custom_id": f"l{i}", "params": long} for i in range(4)])
    deadline = time.monotonic() + 60
    while "running" not in _metric(server, 'missive_batch_requests{state="running"}'):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    waits = []
    for i in range(3):
        started = time.monotonic()
        # no sampling argument: anthropic 1.x takes those only in extra_body, and greedy or not is moot here
        say = [{"role": "user", "content": f"Say {i}."}]
        with client.messages.stream(model=SHORT["model"], max_tokens=3, messages=say) as stream:
            next(iter(stream.text_stream), None)
            waits.append(time.monotonic() - started)
            stream.get_final_message()
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    ended = wait_ended(client, batch.id)
    assert ended.request_counts.succeeded == 4
    assert max(waits) < 2.0, waits  # alone: about 0.1 s; behind 4 batch requests of 300 tokens: about 10 s
    results = results_of(client, batch.id)
    assert all(result.message.usage.output_tokens == 300 for result in results.values())
    preempted = _metric(server, "missive_engine_preemptions_total")
    assert preempted and float(preempted.split()[-1]) > 0


def _metric(server: Server, name: str) -> str:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    line = next((line for line in text.splitlines() if line.startswith(name)), "")
    return line if line and float(line.split()[-1]) > 0 else ""


# --- a priced server of this module's own: the ledger, the CLI, kill -9 -------------------------------


@dataclass
class Priced:
    root: Path
    server: Server
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"sqlite:///{self.root / 'data' / 'missive.db'}"


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Priced]:
    root = tmp_path_factory.mktemp("batches")
    process, server = launch(root, PRICED.format(database=""))
    running = Priced(root, server, process)
    try:
        yield running
    finally:
        stop(running.process)


def _client(server: Server, api_key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=api_key or server.api_key, max_retries=2)


def test_batch_requests_are_billed_at_half_price_and_reported_as_batch(priced: Priced) -> None:
    server = priced.server
    client = _client(server)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"p{i}", "params": ask(f"Name a colour, {i}.", max_tokens=6)} for i in range(3)]
        + [{"custom_id": "bad", "params": ask("x", max_tokens=10**6)}]
    )
    wait_ended(client, batch.id)
    results = results_of(client, batch.id)
    rows = {row["id"]: row for row in ledger(priced.url)}
    assert len(rows) == 3 and all(row["status"] == "succeeded" for row in rows.values())
    for row in rows.values():  # $1000 and $2000 per million tokens, half off: 5e8 and 1e9 pico-USD a token
        assert row["cost_input"] == row["input_tokens"] * 500 * 10**6
        assert row["cost_output"] == row["output_tokens"] * 1000 * 10**6
    assert sum(r.message.usage.output_tokens for r in results.values() if r.type == "succeeded") == sum(
        row["output_tokens"] for row in rows.values()
    )
    headers = {"x-api-key": admin_key(server), "anthropic-version": "2023-06-01"}
    start = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime())
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as admin:
        report = admin.get("/v1/organizations/usage_report/messages",
                           params={"starting_at": start, "group_by[]": "service_tier", "bucket_width": "1d"}).json()  # fmt: skip
    tiers = {row["service_tier"]: row for bucket in report["data"] for row in bucket["results"]}
    assert tiers["batch"]["output_tokens"] == sum(row["output_tokens"] for row in rows.values())

    listed = server.cli("batches", "list")
    assert listed.returncode == 0 and batch.id in listed.stdout and "ended" in listed.stdout, listed
    shown = server.cli("batches", "show", batch.id)
    assert json.loads(shown.stdout)["requests_now"] == {"succeeded": 3, "errored": 1}, shown
    lines = server.cli("batches", "results", batch.id).stdout.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["bad", "p0", "p1", "p2"]
    assert "missive_batch_results_total" in httpx.get(f"{server.base_url}/metrics").text


def test_after_kill_9_the_batch_finishes_with_one_result_and_one_record_per_request(priced: Priced) -> None:
    client = _client(priced.server)
    count = 12
    requests = [{"custom_id": f"k{i}", "params": ask(f"Tell a story about the number {i}.", max_tokens=40)}
                for i in range(count)]  # fmt: skip
    batch = client.messages.batches.create(requests=requests)
    done_sql = f"SELECT count(*) FROM batch_requests WHERE batch_id = '{batch.id}' AND status = 'succeeded'"
    deadline = time.monotonic() + 120
    while query(priced.url, done_sql)[0][0] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stop(priced.process, hard=True)
    before = query(priced.url, done_sql)[0][0]
    assert before < count, "the batch ended before the kill: make it longer"
    port = int(priced.server.base_url.rsplit(":", 1)[1])
    priced.process, restarted = launch(priced.root, priced.server.config_path.read_text(), "restart.log", port)
    recovered = restarted.wait_for_log(r"(\d+) batch requests of stopped front ends queued again", timeout=60)
    ended = wait_ended(client, batch.id)
    assert ended.request_counts.succeeded == count
    results = results_of(client, batch.id)
    assert sorted(results) == sorted(item["custom_id"] for item in requests)
    records = ledger(priced.url, f"id IN (SELECT id FROM batch_requests WHERE batch_id = '{batch.id}')")
    assert len(records) == count and {row["status"] for row in records} == {"succeeded"}
    assert sum(row["output_tokens"] for row in records) == sum(r.message.usage.output_tokens for r in results.values())
    restarted.wait_for_log(rf"batch {batch.id}: \d+/{count} done \(\d+%\), \d+ running, [\d.]+ requests/s")
    restarted.wait_for_log(rf"batch {batch.id} ended [\d.]+ s after its creation: {count} succeeded")
    print(f"\nkill -9 after {before}/{count} results, {recovered.group(1)} running taken back; after the restart: "
          f"{len(results)} results, {len(records)} records")  # fmt: skip


# --- two front ends on PostgreSQL ---------------------------------------------------------------------


@contextlib.contextmanager
def _front_end(root: Path, config: str) -> Iterator[tuple[Any, Server]]:
    process, server = launch(root, config)
    try:
        yield process, server
    finally:
        stop(process)


@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL")
def test_two_front_ends_share_a_batch_and_one_takes_over_when_the_other_dies(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_schema())
        config = PRICED.format(database=f'database_url = "{url}"').replace("parallel = 4", "parallel = 2")
        _, first = stack.enter_context(_front_end(tmp_path_factory.mktemp("front-a"), config))
        second_process, second = stack.enter_context(_front_end(tmp_path_factory.mktemp("front-b"), config))
        key = first.api_key or second.api_key
        client = _client(first, key)
        count = 24
        requests = [{"custom_id": f"f{i}", "params": ask(f"Describe the colour number {i}.", max_tokens=30)}
                    for i in range(count)]  # fmt: skip
        batch = client.messages.batches.create(requests=requests)
        by_front_end = (f"SELECT claimed_by, status, count(*) FROM batch_requests WHERE batch_id = '{batch.id}' "
                        "AND claimed_by IS NOT NULL GROUP BY claimed_by, status")  # fmt: skip
        deadline = time.monotonic() + 90
        while len({row[0] for row in query(url, by_front_end) if row[1] == "succeeded"}) < 2:
            assert time.monotonic() < deadline, "the two front ends did not both finish requests of the batch"
            time.sleep(0.1)
        stop(second_process, hard=True)  # mid-batch: what it was running must be taken over
        at_kill = query(url, by_front_end)
        ended = wait_ended(client, batch.id)
        assert ended.request_counts.succeeded == count
        results = results_of(client, batch.id)
        assert sorted(results) == sorted(item["custom_id"] for item in requests)
        records = ledger(url, f"id IN (SELECT id FROM batch_requests WHERE batch_id = '{batch.id}')")
        assert len(records) == count and {row["status"] for row in records} == {"succeeded"}
        assert len({row["instance_id"] for row in records}) == 2
        print(f"\ntwo front ends, at the kill of one (front end, state, requests): {at_kill}")
