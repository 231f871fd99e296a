"""The official SDKs, as installed from the registries, against a real Missive (tests/clients/).

The current majors (TypeScript `@anthropic-ai/sdk` 1.x, Python `anthropic` 2.x) run as their own
processes (tests/clients/sdk_ts.mjs, sdk_py.py) through a recording proxy; the previous Python major
(1.x, the suite's own `anthropic`) runs in this process through one. The tests check what each client
saw and what it really sent: API version, credentials, every status.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema
import pytest
from clients import harness
from clients.checks import STOP_REASONS, Observed, credentials, observe, text_of, tool_uses
from clients.recorder import Recorder
from conftest import Server

MODEL = "claude-sonnet-4-6"
HELLO: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Say hello in one short sentence."}]
SCRIPTS = {
    "ts": ["node", str(harness.SCRIPTS / "sdk_ts.mjs")],
    "py": [str(harness.PYTHON), str(harness.SCRIPTS / "sdk_py.py")],
}
USER_AGENTS = {"ts": ["Anthropic/JS"], "py": ["Anthropic/Python", "AsyncAnthropic/Python"]}
FORCED = {"type": "tool", "name": "get_weather"}

# The script's own limit bounds the wait; the first test also waits for the session's server to start.
pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module", params=sorted(SCRIPTS))
def sdk(
    request: pytest.FixtureRequest, clients_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Observed]]:
    """One run of an SDK's script, read by all the tests below."""
    name: str = request.param
    workdir = tmp_path_factory.mktemp(f"sdk-{name}")
    yield name, observe(clients_server.base_url, clients_server.api_key, workdir, SCRIPTS[name], timeout=240)


def forced_request(seen: Observed) -> dict[str, Any]:
    (exchange,) = [e for e in seen.requests("/v1/messages") if e.body.get("tool_choice") == FORCED]
    return exchange.body


def test_every_request_got_the_status_the_client_expects(sdk: tuple[str, Observed]) -> None:
    name, seen = sdk
    assert seen.foreign == []
    batches = "/v1/messages/batches"  # test_batches
    refused = [(e.status, e.body["model"], e.error["error"]["type"]) for e in seen.refused() if batches not in e.path]
    assert refused == [(404, "no-such-model", "not_found_error"), (400, MODEL, "invalid_request_error")]
    paths = [(e.method, e.path) for e in seen.exchanges if e.status < 400 and batches not in e.path]
    messages, count, models = ("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"), "/v1/models"
    # Auto-pagination, one model a page: each page after the first starts after the last one's model.
    pages = [("GET", f"{models}?limit=1")]
    pages += [("GET", f"{models}?limit=1&after_id={model}") for model in seen.out["models"]["ids"][:-1]]
    asynchronous = [messages] * 2 if name == "py" else []
    assert paths == [messages] * 3 + [count, messages] + pages + [("GET", models)] + asynchronous
    assert all(e.status == 200 for e in seen.exchanges if e.status < 400)


def test_what_the_sdk_sent(sdk: tuple[str, Observed], clients_server: Server) -> None:
    name, seen = sdk
    version = seen.out["sdk_version"]
    assert version.split(".")[0] == {"ts": "1", "py": "2"}[name]
    assert credentials(seen.exchanges) == {("2026-10-21", f"Bearer {clients_server.api_key}", None)}
    assert sorted({e.headers["user-agent"] for e in seen.exchanges}) == [
        f"{ua} {version}" for ua in USER_AGENTS[name]
    ]
    assert all(e.betas == [] for e in seen.exchanges)
    assert {e.headers.get("x-stainless-retry-count") for e in seen.exchanges} == {"0"}  # nothing was retried
    # API version 2026-10-21 has no sampling parameters: only the deliberately invalid request has one.
    sampled = [
        e.status for e in seen.requests("/v1/messages") if {"temperature", "top_p", "top_k"} & set(e.body)
    ]
    assert sampled == [400]


def test_create_and_stream(sdk: tuple[str, Observed]) -> None:
    _, seen = sdk
    created, streamed = seen.out["create"], seen.out["stream"]
    for message in (created, streamed["final"]):
        assert (message["type"], message["role"], message["model"]) == ("message", "assistant", MODEL)
        assert message["id"].startswith("msg_")
        assert message["stop_reason"] in STOP_REASONS - {"tool_use"}  # no tools were offered
        assert text_of(message["content"]).strip()
        assert message["usage"]["input_tokens"] > 0 and 0 < message["usage"]["output_tokens"] <= 20
    assert streamed["events"][0] == "message_start" and streamed["events"][-1] == "message_stop"
    assert len(streamed["deltas"]) > 1
    assert "".join(streamed["deltas"]) == text_of(streamed["final"]["content"])
    assert text_of(streamed["final"]["content"]) == text_of(created["content"])  # temperature 0: repeatable
    assert [e.body.get("stream") for e in seen.requests("/v1/messages")[:2]] == [None, True]


def test_forced_tool_streams_a_schema_valid_input(sdk: tuple[str, Observed]) -> None:
    _, seen = sdk
    forced = seen.out["forced_tool"]
    assert "exception" not in forced, forced
    request = forced_request(seen)
    assert request["stream"] is True
    final = forced["final"]
    assert final["stop_reason"] in {"tool_use", "max_tokens"}
    assert final["content"][0]["type"] == "tool_use"
    first = tool_uses(final["content"])[0]
    assert first["name"] == "get_weather" and first["id"].startswith("toolu_")
    jsonschema.validate(first["input"], request["tools"][0]["input_schema"])
    # The input arrived as input_json_delta events, which the SDK's helper saw and parsed.
    assert "input_json_delta" in forced["delta_types"]
    assert json.loads(forced["json_by_block"]["0"]) == first["input"]
    assert "".join(forced["partials"]) == "".join(forced["json_by_block"].values())


def test_forced_tool_is_exactly_one_call(sdk: tuple[str, Observed]) -> None:
    _, seen = sdk
    forced = seen.out["forced_tool"]
    final = forced["final"]
    assert [block["type"] for block in final["content"]] == ["tool_use"]
    assert final["stop_reason"] == "tool_use"
    assert forced["snapshot"] == final["content"][0]["input"]


def test_count_tokens_and_models(sdk: tuple[str, Observed]) -> None:
    _, seen = sdk
    counted = seen.out["count_tokens"]
    assert counted["counted"] == counted["created"] > 0
    models = seen.out["models"]
    assert len(models["ids"]) > 1 and models["ids"] == models["all"]  # pages of one add up to the whole list
    assert models["first"]["id"] == "smollm2-135m-instruct" and models["first"]["type"] == "model"
    assert models["first"]["max_input_tokens"] == 8192


def test_errors_are_typed_with_the_request_id(sdk: tuple[str, Observed]) -> None:
    _, seen = sdk
    not_found, bad = seen.out["not_found"], seen.out["bad_request"]
    assert (not_found["raised"], not_found["not_found"], not_found["status"]) == ("NotFoundError", True, 404)
    assert not_found["type"] == "not_found_error" and not_found["api_message"] == "model: no-such-model"
    assert (bad["raised"], bad["bad_request"], bad["status"]) == ("BadRequestError", True, 400)
    assert bad["type"] == "invalid_request_error"
    assert bad["api_message"] == "temperature: Extra inputs are not permitted"
    # The body as the SDK kept it: the Anthropic error shape.
    assert [(e["body_type"], e["error_type"]) for e in (not_found, bad)] == [
        ("error", "not_found_error"),
        ("error", "invalid_request_error"),
    ]
    # The SDK's request id is the one in the body the server sent.
    refused = [e for e in seen.refused() if "/v1/messages/batches" not in e.path]  # test_batches' own 404
    assert [not_found["request_id"], bad["request_id"]] == [e.error["request_id"] for e in refused]
    assert all(e.error["request_id"].startswith("req_") for e in refused)


def test_batches(sdk: tuple[str, Observed]) -> None:
    """create, poll to the end, results (the SDK follows results_url), list, beta, cancel, delete."""
    _, seen = sdk
    out = seen.out["batches"]
    assert "exception" not in out, out
    created, ended = out["created"], out["ended"]
    batch_id = created["id"]
    assert created["processing_status"] == "in_progress" and created["request_counts"]["processing"] == 2
    assert ended["request_counts"] == {"processing": 0, "succeeded": 1, "errored": 1, "canceled": 0, "expired": 0}
    assert ended["results_url"].endswith(f"/v1/messages/batches/{batch_id}/results")
    ok, refused = out["results"]["ok"], out["results"]["too-long"]
    assert ok["type"] == "succeeded" and ok["message"]["usage"]["service_tier"] == "batch"
    assert ok["message"]["content"][0]["type"] == "text"
    assert refused["type"] == "errored" and refused["error"]["error"]["type"] == "invalid_request_error"
    assert out["listed_first"] == batch_id and out["beta"] == "ended"
    assert out["canceled"]["cancel_initiated_at"] and out["canceled"]["processing_status"] in ("canceling", "ended")
    assert out["deleted"] == {"id": batch_id, "type": "message_batch_deleted"}
    assert out["gone"]["not_found"] and out["gone"]["status"] == 404
    sent = {(e.method, e.path.split("?")[0].replace(batch_id, "{id}"), e.status) for e in seen.exchanges
            if "/batches" in e.path and batch_id in e.path}  # fmt: skip
    assert {("GET", "/v1/messages/batches/{id}/results", 200), ("DELETE", "/v1/messages/batches/{id}", 200),
            ("GET", "/v1/messages/batches/{id}", 404)} <= sent  # fmt: skip


@pytest.mark.parametrize("sdk", ["py"], indirect=True)
def test_python_async_client(sdk: tuple[str, Observed]) -> None:
    _, seen = sdk
    used = seen.out["async"]
    assert "exception" not in used, used
    text = text_of(used["create"]["content"])
    assert text.strip() and used["stream_text"] == text_of(used["stream_final"]["content"]) == text
    assert used["create"]["stop_reason"] in STOP_REASONS - {"tool_use"}


def test_previous_major_side_by_side(recorder: Recorder, clients_server: Server) -> None:
    """anthropic 1.x speaks API version 2023-06-01 (as 0.x did), with `x-api-key`; its methods take no
    sampling parameters, but that API version has them, so `extra_body` carries one."""
    assert anthropic.__version__.startswith("1.")
    client = anthropic.Anthropic(
        base_url=recorder.url, api_key=clients_server.api_key, max_retries=0, timeout=60
    )
    created = client.messages.create(model=MODEL, max_tokens=20, messages=HELLO, extra_body={"temperature": 0})
    with client.messages.stream(model=MODEL, max_tokens=20, messages=HELLO) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    text = "".join(b.text for b in created.content if b.type == "text")
    assert text.strip() and created.stop_reason in STOP_REASONS - {"tool_use"}
    assert len(deltas) > 1
    assert "".join(deltas) == "".join(b.text for b in final.content if b.type == "text") == text
    sent = [(e.path, e.status, e.body.get("stream"), e.body.get("temperature")) for e in recorder.exchanges]
    assert sent == [
        ("/v1/messages", 200, None, 0),
        ("/v1/messages", 200, True, None),
    ]
    assert recorder.refused() == [] and recorder.foreign == []
    assert credentials(recorder.exchanges) == {("2023-06-01", None, clients_server.api_key)}
    user_agents = {e.headers["user-agent"] for e in recorder.exchanges}
    assert user_agents == {f"Anthropic/Python {anthropic.__version__}"}
