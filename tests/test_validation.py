"""Bad input: every malformed request gets an Anthropic-shaped 4xx that names the field (spec §3, §7)."""

from __future__ import annotations

import base64
import re

import anthropic
import httpx
import pytest
from media_files import image_bytes

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
            "'container_upload', 'compaction', 'mcp_tool_use', 'mcp_tool_result', 'mcp_tool_listing', "
            "'advisor_tool_result', 'fallback', 'tool_addition', 'tool_removal'",
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


def test_unknown_betas_are_accepted_and_logged_once(http: httpx.Client, server) -> None:  # type: ignore[no-untyped-def]
    known = "prompt-caching-2024-07-31, token-counting-2024-11-01,claude-code-20250219"
    assert http.post("/v1/messages", json=body(), headers={"anthropic-beta": known}).status_code == 200
    start = len(server.log())
    for _ in range(2):  # every client release adds betas: a new name is never a 400
        response = http.post("/v1/messages/count_tokens", json=count(), headers={"anthropic-beta": "from-the-future-2031-01-01"})
        assert response.status_code == 200, response.text
    assert server.log()[start:].count("accepting unknown anthropic-beta 'from-the-future-2031-01-01'") == 1
    # A field that a known beta gates stays gated by it.
    assert error_of(http.post("/v1/messages", json=body(context_management={"edits": []}))) == (
        "context_management: Extra inputs are not permitted"
    )
    managed = body(context_management={"edits": [{"type": "clear_tool_uses_20250919"}]})
    assert http.post("/v1/messages", json=managed, headers={"anthropic-beta": "context-management-2025-06-27"}).status_code == 200


def test_strict_betas_refuse_unknown_names_with_the_claude_api_text() -> None:
    from missive.wire.betas import parse_betas
    from missive.wire.errors import ApiError

    with pytest.raises(ApiError) as refused:
        parse_betas("prompt-caching-2024-07-31,made-up-beta", strict=True)
    assert refused.value.message == (
        "Unexpected value(s) `made-up-beta` for the `anthropic-beta` header. Please consult our documentation at "
        "platform.claude.com/docs or try again without the header."
    )
    assert parse_betas("made-up-beta", strict=True, extra_known=["made-up-beta"]).unknown == ()
    assert parse_betas("made-up-beta").unknown == ("made-up-beta",)


def count(**overrides: object) -> dict:
    return {"model": MODEL, "messages": USER, **overrides}


CC_BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"


@pytest.mark.parametrize(
    ("messages", "beta", "error"),
    [
        # Claude Code 2.1.332 sets this turn's effort with an empty system message (per-turn control).
        ([*USER, {"role": "system", "content": [], "output_config": {"effort": "medium"}}], "per-turn-control-2026-07-01",
         "messages.1.output_config: Extra inputs are not permitted"),
        ([*USER, {"role": "system", "content": "Only this turn.", "clear_at": "next_user_message"}],
         "mid-conversation-system-clear-at-2026-08-21", "messages.1.clear_at: Extra inputs are not permitted"),
        ([*USER, {"role": "system", "content": [{"type": "tool_addition", "tool": {"type": "tool_reference", "name": "x"}},
                                                 {"type": "tool_removal", "tool": {"type": "tool_reference", "name": "y"}}]}],
         "mid-conversation-tool-changes-2026-07-01",
         "messages.1.content.0: `tool_addition` blocks need the `anthropic-beta` header "
         "`mid-conversation-tool-changes-2026-07-01`"),
    ],
)  # fmt: skip
def test_claude_code_system_messages(http: httpx.Client, messages: list, beta: str, error: str) -> None:
    payload = count(messages=messages)
    response = http.post("/v1/messages/count_tokens?beta=true", json=payload, headers={"anthropic-beta": f"{CC_BETAS},{beta}"})
    assert response.status_code == 200, response.text
    assert error_of(http.post("/v1/messages/count_tokens", json=payload, headers={"anthropic-beta": CC_BETAS})) == error


def test_a_system_message_between_a_tool_use_and_its_result(http: httpx.Client) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}
    turns = [*USER, {"role": "assistant", "content": [use]}, {"role": "system", "content": "Be brief."},
             {"role": "user", "content": [result]}]  # fmt: skip
    payload = count(messages=turns, tools=[{"name": "get", "input_schema": {"type": "object"}}])
    assert http.post("/v1/messages/count_tokens", json=payload).status_code == 200


def test_what_a_system_message_may_hold(http: httpx.Client) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert error_of(http.post("/v1/messages/count_tokens", json=count(messages=[*USER, {"role": "system", "content": [image]}]))) == (
        "messages.1.content.0: system messages take only `text`, `tool_addition` and `tool_removal` blocks, not `image`"
    )
    clearing = {"anthropic-beta": "mid-conversation-system-clear-at-2026-08-21"}
    user_clear_at = count(messages=[{"role": "user", "content": "Hi", "clear_at": "never"}])
    assert error_of(http.post("/v1/messages/count_tokens", json=user_clear_at, headers=clearing)) == (
        "messages.0.clear_at: only permitted on `system` messages"
    )
    assert error_of(http.post("/v1/messages/count_tokens", json=count(messages=[*USER, {"role": "system"}]))) == (
        "messages.1: a system message needs `content` or `output_config`"
    )
    assert error_of(http.post("/v1/messages/count_tokens", json=count(messages=[{"role": "user"}]))) == (
        "messages.0.content: Field required"
    )


def test_a_system_message_is_shown_where_it_stands_until_it_clears(http: httpx.Client) -> None:
    def tokens(messages: list) -> int:
        headers = {"anthropic-beta": "mid-conversation-system-clear-at-2026-08-21"}
        response = http.post("/v1/messages/count_tokens", json=count(messages=messages), headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["input_tokens"]

    note = {"role": "system", "content": "Answer in French from now on."}
    later = [{"role": "assistant", "content": "Bonjour."}, {"role": "user", "content": "Again"}]
    base = tokens([*USER, *later])
    assert tokens([*USER, note, *later]) > base  # shown
    assert tokens([*USER, {**note, "clear_at": "next_user_message"}, *later]) == base  # cleared by the later user turn
    assert tokens([*USER, *later, {**note, "clear_at": "next_user_message"}]) > base  # not yet


@pytest.mark.parametrize(
    ("overrides", "beta", "error"),
    [
        ({"thinking": {"type": "adaptive", "display": "updates"}}, "thinking-display-updates-2026-08-18",
         "thinking.display: `updates` needs the `anthropic-beta` header `thinking-display-updates-2026-08-18`"),
        ({"thinking": {"type": "adaptive", "block_binding": {"prefix_mismatch_behavior": "drop_block"}}},
         "thinking-binding-controls-2026-08-01", "thinking.block_binding: Extra inputs are not permitted"),
        ({"system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral", "scope": "global"}}]},
         "prompt-caching-scope-2026-01-05", "system.0.cache_control.scope: Extra inputs are not permitted"),
        ({"output_config": {"task_budget": {"type": "tokens", "total": 1000}}}, "task-budgets-2026-03-13",
         "output_config.task_budget: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_fields_of_newer_betas(http: httpx.Client, overrides: dict, beta: str, error: str) -> None:
    payload = count(**overrides)
    assert http.post("/v1/messages/count_tokens", json=payload, headers={"anthropic-beta": beta}).status_code == 200
    assert error_of(http.post("/v1/messages/count_tokens", json=payload)) == error


def test_the_newest_sdk_types_parse(http: httpx.Client) -> None:
    """What anthropic 2.16 may send without a beta."""
    assert http.post("/v1/messages/count_tokens", json=count(thinking={"type": "between_tools"}, speed="standard")).status_code == 200
    use = {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {}, "toolset_name": "kit"}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "toolset_name": "kit",
              "content": [{"type": "text", "text": "ok"}, {"type": "tool_reference", "tool_name": "get"}]}
    tools = [{"name": "get", "input_schema": {"type": "object"}}]
    turns = [*USER, {"role": "assistant", "content": [use]}, {"role": "user", "content": [result]}]
    assert http.post("/v1/messages/count_tokens", json=count(messages=turns, tools=tools)).status_code == 200
    assert error_of(http.post("/v1/messages/count_tokens", json=count(tools=[{"type": "browser_toolset_20260801"}]))) == (
        "tools.0: server tool browser_toolset_20260801 is not available on this server"
    )  # fmt: skip


def test_version_2026_10_21_rules_for_blocks(http: httpx.Client) -> None:
    new = {"anthropic-version": "2026-10-21"}
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Notes."}}
    in_assistant = count(messages=[*USER, {"role": "assistant", "content": [doc]}, {"role": "user", "content": "Go on"}])
    assert http.post("/v1/messages/count_tokens", json=in_assistant).status_code == 200
    assert error_of(http.post("/v1/messages/count_tokens", json=in_assistant, headers=new)) == (
        "messages.1.content.0: `document` blocks are not allowed in assistant messages (API version 2026-10-21)"
    )
    cited = {"type": "text", "text": "As quoted.", "citations": [{"type": "char_location", "cited_text": "x"}]}
    for content, where in (
        ([cited], "messages.0.content.0"),
        ([{"type": "search_result", "source": "s", "title": "t", "content": [cited]}], "messages.0.content.0.content.0"),
    ):
        payload = count(messages=[{"role": "user", "content": content}])
        assert http.post("/v1/messages/count_tokens", json=payload).status_code == 200
        assert error_of(http.post("/v1/messages/count_tokens", json=payload, headers=new)) == (
            f"{where}.citations: citations are not allowed on text in user messages (API version 2026-10-21)"
        )
    uncited = count(messages=[{"role": "user", "content": [{**cited, "citations": []}]}])
    assert http.post("/v1/messages/count_tokens", json=uncited, headers=new).status_code == 200


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
    png = base64.b64encode(image_bytes("PNG")).decode()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    payload = body(messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}])
    assert error_of(http.post("/v1/messages", json=payload)) == (
        "messages.0.content.1: model smollm2-135m-instruct does not support image input"
    )
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    payload = body(messages=[{"role": "user", "content": [pdf, {"type": "text", "text": "Summarise."}]}])
    assert "The PDF specified was not valid" in error_of(http.post("/v1/messages", json=payload))  # test_documents.py
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The sky is green."}}
    payload = body(messages=[{"role": "user", "content": [text_doc, {"type": "text", "text": "What colour is the sky?"}]}])
    assert http.post("/v1/messages", json=payload).status_code == 200


def test_unknown_paths_and_methods_are_404_in_the_anthropic_shape(http: httpx.Client) -> None:
    assert error_of(http.get("/v1/nothing-here"), 404, "not_found_error")
    assert error_of(http.get("/v1/messages"), 404, "not_found_error")
    assert error_of(http.delete("/v1/models"), 404, "not_found_error")
