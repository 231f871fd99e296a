"""Bad input: every malformed request gets an Anthropic-shaped 4xx that names the field (spec §3, §7)."""

from __future__ import annotations

import re

import anthropic
import httpx
import pytest

MODEL = "claude-sonnet-4-6"
USER = [{"role": "user", "content": "Hi"}]


def body(**overrides: object) -> dict:
    return {"model": MODEL, "max_tokens": 8, "messages": USER, **overrides}


def error_of(response: httpx.Response, status: int = 400, error_type: str = "invalid_request_error") -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["x-should-retry"] in ("true", "false")
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == error_type
    assert payload["request_id"] == response.headers["request-id"]
    return payload["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"model": MODEL, "messages": USER}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": 8}, "messages: Field required"),
        ({"max_tokens": 8, "messages": USER}, "model: Field required"),
        (body(max_tokens="many"), "max_tokens: Input should be a valid integer, unable to parse string as an integer"),
        (body(max_tokens=-1), "max_tokens: Input should be greater than or equal to 0"),
        (body(temperature=1.5), "temperature: Input should be less than or equal to 1"),
        (body(top_k=-2), "top_k: Input should be greater than or equal to 0"),
        (body(frobnicate=True), "frobnicate: Extra inputs are not permitted"),
        (
            body(system=[{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "5m", "x": 1}}]),
            "system.0.cache_control.x: Extra inputs are not permitted",
        ),
        (body(messages=[{"role": "robot", "content": "Hi"}]), "messages.0.role: Input should be 'user', 'assistant' or 'system'"),
        (body(messages=[]), "messages: at least one message is required"),
        (
            body(messages=[{"role": "user", "content": ""}]),
            "messages.0: all messages must have non-empty content except for the optional final assistant message",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
            "messages: text content blocks must be non-empty",
        ),
        (
            body(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well, "}]),
            "final assistant content cannot end with trailing whitespace",
        ),
        (body(stop_sequences=["ok", "  "]), "stop_sequences: each stop sequence must contain non-whitespace"),
        (
            body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages.0.content.0.text.text: Field required",
        ),
        (
            body(tools=[{"name": "bad name!", "input_schema": {"type": "object"}}]),
            "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'",
        ),
        (
            body(max_tokens=100000),
            f"max_tokens: 100000 > 64000, which is the maximum allowed number of output tokens for {MODEL}",
        ),
        (
            body(thinking={"type": "enabled", "budget_tokens": 100}, max_tokens=2000),
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
        ),
        (
            body(thinking={"type": "enabled", "budget_tokens": 2000}, max_tokens=1500),
            "`max_tokens` must be greater than `thinking.budget_tokens`.",
        ),
        (
            body(thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2000, temperature=0.5),
            "`temperature` may only be set to 1 when thinking is enabled",
        ),
        (body(context_management={"edits": []}), "context_management: Extra inputs are not permitted"),
        (
            body(
                cache_control={"type": "ephemeral"},
                system=[{"type": "text", "text": t, "cache_control": {"type": "ephemeral"}} for t in "abcd"],
            ),
            "A maximum of 4 blocks with cache_control may be provided. Found 5.",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "video", "data": "x"}]}]),
            "messages.0.content.0: Input tag 'video' found using 'type' does not match any of the expected tags: "
            "'text', 'image', 'document', 'search_result', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking', "
            "'server_tool_use', 'web_search_tool_result', 'web_fetch_tool_result', 'code_execution_tool_result', "
            "'bash_code_execution_tool_result', 'text_editor_code_execution_tool_result', 'tool_search_tool_result', "
            "'container_upload', 'mid_conv_system'",
        ),
    ],
)
def test_invalid_requests_name_the_field(http: httpx.Client, payload: dict, message: str) -> None:
    assert error_of(http.post("/v1/messages", json=payload)) == message


def test_invalid_json_and_empty_body(http: httpx.Client) -> None:
    assert error_of(http.post("/v1/messages", content=b"{not json")).startswith("Invalid JSON")
    assert error_of(http.post("/v1/messages", content=b""))
    assert error_of(http.post("/v1/messages", json=[1, 2])) == "Input should be an object"


def test_unknown_model_is_404(http: httpx.Client, client: anthropic.Anthropic) -> None:
    assert error_of(http.post("/v1/messages", json=body(model="gpt-4o")), 404, "not_found_error") == "model: gpt-4o"
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=4, messages=USER)
    assert caught.value.type == "not_found_error"
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


def test_prompt_too_long_has_the_exact_text_clients_compact_on(http: httpx.Client) -> None:
    long = "lorem ipsum dolor sit amet " * 100  # well past smollm2-small's 256-token window
    response = http.post("/v1/messages", json=body(model="smollm2-small", messages=[{"role": "user", "content": long}]))
    message = error_of(response)
    match = re.fullmatch(r"prompt is too long: (\d+) tokens > 256 maximum", message)
    assert match and int(match.group(1)) > 256
    counted = http.post(
        "/v1/messages/count_tokens", json={"model": "smollm2-small", "messages": [{"role": "user", "content": long}]}
    )
    assert error_of(counted) == message


def test_count_tokens_rejects_generation_fields(http: httpx.Client) -> None:
    payload = {"model": MODEL, "messages": USER, "max_tokens": 5}
    assert error_of(http.post("/v1/messages/count_tokens", json=payload)) == "max_tokens: Extra inputs are not permitted"
    payload = {"model": MODEL, "messages": USER, "stream": True}
    assert error_of(http.post("/v1/messages/count_tokens", json=payload)) == "stream: Extra inputs are not permitted"


def test_body_over_32_mb_is_413(http: httpx.Client) -> None:
    huge = b'{"model": "x", "max_tokens": 1, "messages": [{"role": "user", "content": "' + b"a" * (33 * 1024 * 1024) + b'"}]}'
    response = http.post("/v1/messages", content=huge)
    assert error_of(response, 413, "request_too_large") == "Request exceeds the maximum allowed number of bytes."


def test_anthropic_version_header(http: httpx.Client, server) -> None:  # type: ignore[no-untyped-def]
    headers = {"x-api-key": server.api_key}
    response = httpx.post(f"{server.base_url}/v1/messages", json=body(), headers=headers)
    assert error_of(response) == "anthropic-version: header is required"
    response = httpx.post(
        f"{server.base_url}/v1/messages", json=body(), headers={**headers, "anthropic-version": "1999-01-01"}
    )
    assert "anthropic-version" in error_of(response)


def test_version_2026_10_21_removed_the_sampling_parameters(http: httpx.Client) -> None:
    response = http.post("/v1/messages", json=body(temperature=0), headers={"anthropic-version": "2026-10-21"})
    assert error_of(response) == "temperature: Extra inputs are not permitted"
    response = http.post("/v1/messages", json=body(), headers={"anthropic-version": "2026-10-21"})
    assert response.status_code == 200


def test_anthropic_beta_header(http: httpx.Client) -> None:
    known = "prompt-caching-2024-07-31, token-counting-2024-11-01,claude-code-20250219"
    assert http.post("/v1/messages", json=body(), headers={"anthropic-beta": known}).status_code == 200
    response = http.post("/v1/messages", json=body(), headers={"anthropic-beta": "prompt-caching-2024-07-31,made-up-beta"})
    assert error_of(response) == (
        "Unexpected value(s) `made-up-beta` for the `anthropic-beta` header. Please consult our documentation at "
        "platform.claude.com/docs or try again without the header."
    )
    managed = body(context_management={"edits": [{"type": "clear_tool_uses_20250919"}]})
    assert http.post("/v1/messages", json=managed, headers={"anthropic-beta": "context-management-2025-06-27"}).status_code == 200


def test_claude_code_request_shape_is_accepted(http: httpx.Client) -> None:
    """What Claude Code 2.1.x sends: ?beta=true, several betas, adaptive thinking, effort, a system turn."""
    payload = {
        "model": "claude-opus-4-7",
        "max_tokens": 32000,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "system", "content": "Extra instructions."},
            {"role": "user", "content": [{"type": "text", "text": "Say ok.", "cache_control": {"type": "ephemeral"}}]},
        ],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": '{"device_id":"abc","session_id":"def"}'},
    }
    betas = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,effort-2025-11-24"
    # At temperature 1 with max_tokens 32000 the model may write for minutes: the shape is accepted
    # once the stream has started and a block is streaming (stream endings are tested elsewhere).
    events = []
    with http.stream("POST", "/v1/messages?beta=true", json=payload, headers={"anthropic-beta": betas}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                events.append(line)
            if line == "event: content_block_delta" or line == "event: message_stop":
                break
    assert events[0] == "event: message_start" and "event: content_block_start" in events


def test_images_and_pdfs_are_refused_not_dropped(http: httpx.Client) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    payload = body(messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}])
    assert error_of(http.post("/v1/messages", json=payload)) == (
        "messages.0.content.1: model smollm2-135m-instruct does not support image input"
    )
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    payload = body(messages=[{"role": "user", "content": [pdf, {"type": "text", "text": "Summarise."}]}])
    assert "does not support PDF" in error_of(http.post("/v1/messages", json=payload))
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The sky is green."}}
    payload = body(messages=[{"role": "user", "content": [text_doc, {"type": "text", "text": "What colour is the sky?"}]}])
    assert http.post("/v1/messages", json=payload).status_code == 200


def test_unknown_paths_and_methods_are_404_in_the_anthropic_shape(http: httpx.Client) -> None:
    assert error_of(http.get("/v1/nothing-here"), 404, "not_found_error")
    assert error_of(http.get("/v1/messages"), 404, "not_found_error")
    assert error_of(http.delete("/v1/models"), 404, "not_found_error")
