"""Tool-use pairing rules (spec §3.3): the function itself, and two checks through the real server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_validation import error_of

from missive.wire import requests as rq
from missive.wire.errors import ApiError
from missive.wire.validate import check_tool_pairing

MODEL = "claude-sonnet-4-6"
MISSING = (
    "messages.{n}: `tool_use` ids were found without `tool_result` blocks immediately after: {ids}. "
    "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
)
UNEXPECTED = (
    "messages.{n}.content.{m}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. "
    "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
)
ORDER = "messages.{n}: `tool_result` blocks must come before any other content in the message"
UNIQUE = "messages.{n}.content.{m}: `tool_use` ids must be unique"


def use(tool_id: str, name: str = "get_weather") -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": {"city": "Paris"}}


def result(tool_id: str, content: Any = "18 C", **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": content, **extra}


def user(*content: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(content) if content else "What is the weather?"}


def assistant(*content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": list(content)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def check(messages: list[dict[str, Any]]) -> None:
    check_tool_pairing([rq.MessageParam.model_validate(message) for message in messages])


def error(messages: list[dict[str, Any]]) -> str:
    with pytest.raises(ApiError) as caught:
        check(messages)
    assert caught.value.status == 400 and caught.value.error_type == "invalid_request_error"
    return caught.value.message


# --- valid conversations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([user()], id="no tools"),
        pytest.param(
            [user(), assistant(text("Let me look."), use("toolu_a")), user(result("toolu_a"))], id="one call"
        ),
        pytest.param(
            [
                user(),
                assistant(use("toolu_a")),
                user(result("toolu_a")),
                assistant(text("And Rome?"), use("toolu_b")),
                user(result("toolu_b"), text("Thanks")),
                assistant(text("Paris 18 C, Rome 24 C.")),
                user(text("Great")),
            ],
            id="multi-turn tool loop",
        ),
        pytest.param(
            [
                user(),
                assistant(use("toolu_a"), use("toolu_b"), use("toolu_c", "get_time")),
                user(result("toolu_b"), result("toolu_c"), result("toolu_a")),  # any order
            ],
            id="parallel calls",
        ),
        pytest.param(
            [
                user(),
                assistant(use("toolu_a"), use("toolu_b"), use("toolu_c"), use("toolu_d")),
                user(
                    result("toolu_a", "plain"),
                    result("toolu_b", [text("array"), {"type": "text", "text": "of blocks"}]),
                    result("toolu_c", []),
                    {"type": "tool_result", "tool_use_id": "toolu_d"},  # no content at all
                ),
            ],
            id="string, array, empty and absent content",
        ),
        pytest.param(
            [user(), assistant(use("toolu_a")), user(result("toolu_a", "city not found", is_error=True))],
            id="is_error",
        ),
        pytest.param(
            [user(), assistant(text("Checking.")), assistant(use("toolu_a")), user(result("toolu_a"))],
            id="tool_use in the second of two assistant messages",
        ),
        pytest.param(
            [
                user(),
                assistant(use("toolu_a"), use("toolu_b")),
                user(result("toolu_a")),
                user(result("toolu_b"), text("Both done")),
            ],
            id="results split across consecutive user messages",
        ),
        pytest.param(
            [user(), assistant(use("toolu_a")), user(result("toolu_a")), assistant(text("It is 18 C."))],
            id="final assistant turn without tool use (prefill)",
        ),
        pytest.param(
            [
                user(),
                assistant(
                    {"type": "server_tool_use", "id": "srvtoolu_a", "name": "web_search", "input": {}},
                    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_a", "content": []},
                    text("Found nothing."),
                ),
                user(text("ok")),
            ],
            id="server tools are answered by the server",
        ),
    ],
)
def test_valid_conversations(messages: list[dict[str, Any]]) -> None:
    check(messages)


# --- errors -----------------------------------------------------------------------------------


def test_tool_use_without_result() -> None:
    messages = [user(), assistant(use("toolu_a"), use("toolu_b")), user(text("never mind"))]
    assert error(messages) == MISSING.format(n=1, ids="toolu_a, toolu_b")


def test_tool_use_partly_answered_names_only_the_missing_ids() -> None:
    messages = [user(), assistant(use("toolu_a"), use("toolu_b"), use("toolu_c")), user(result("toolu_b"))]
    assert error(messages) == MISSING.format(n=1, ids="toolu_a, toolu_c")


def test_tool_use_in_the_final_assistant_message() -> None:
    messages = [user(), assistant(text("Let me look."), use("toolu_a"))]
    assert error(messages) == MISSING.format(n=1, ids="toolu_a")


def test_tool_result_not_in_the_immediately_following_message() -> None:
    messages = [
        user(),
        assistant(use("toolu_a")),
        user(text("wait")),
        assistant(text("ok")),
        user(result("toolu_a")),
    ]
    assert error(messages) == MISSING.format(n=1, ids="toolu_a")


def test_missing_result_names_the_assistant_message_holding_the_use() -> None:
    """Merged assistant messages: the index is that of the message the client sent the tool_use in."""
    messages = [user(), assistant(text("Checking.")), assistant(use("toolu_a")), user(text("no"))]
    assert error(messages) == MISSING.format(n=2, ids="toolu_a")


def test_unexpected_tool_result() -> None:
    messages = [user(), assistant(use("toolu_a")), user(result("toolu_a"), result("toolu_zzz"))]
    assert error(messages) == UNEXPECTED.format(n=2, m=1, id="toolu_zzz")


def test_tool_result_without_any_tool_use() -> None:
    assert error([user(result("toolu_a"))]) == UNEXPECTED.format(n=0, m=0, id="toolu_a")


def test_tool_result_answering_an_older_turn() -> None:
    messages = [
        user(),
        assistant(use("toolu_a")),
        user(result("toolu_a")),
        assistant(text("done")),
        user(result("toolu_a")),
    ]
    assert error(messages) == UNEXPECTED.format(n=4, m=0, id="toolu_a")


def test_unexpected_result_in_the_second_of_two_user_messages() -> None:
    messages = [user(), assistant(use("toolu_a")), user(result("toolu_a")), user(result("toolu_b"))]
    assert error(messages) == UNEXPECTED.format(n=3, m=0, id="toolu_b")


def test_tool_result_after_text() -> None:
    messages = [user(), assistant(use("toolu_a")), user(text("Here:"), result("toolu_a"))]
    assert error(messages) == ORDER.format(n=2)


def test_tool_result_after_text_across_consecutive_user_messages() -> None:
    messages = [
        user(),
        assistant(use("toolu_a"), use("toolu_b")),
        user(result("toolu_a"), text("and")),
        user(result("toolu_b")),
    ]
    assert error(messages) == ORDER.format(n=3)


def test_tool_use_ids_unique_within_a_message() -> None:
    messages = [user(), assistant(use("toolu_a"), use("toolu_a")), user(result("toolu_a"))]
    assert error(messages) == UNIQUE.format(n=1, m=1)


def test_tool_use_ids_unique_across_the_conversation() -> None:
    messages = [
        user(),
        assistant(use("toolu_a")),
        user(result("toolu_a")),
        assistant(text("again"), use("toolu_a")),
        user(result("toolu_a")),
    ]
    assert error(messages) == UNIQUE.format(n=3, m=1)


# --- through the server -----------------------------------------------------------------------


def test_messages_endpoint_rejects_unanswered_tool_use(http: httpx.Client) -> None:
    messages = [user(), assistant(use("toolu_a")), user(text("never mind"))]
    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": messages})
    assert error_of(response) == MISSING.format(n=1, ids="toolu_a")


def test_count_tokens_rejects_unexpected_tool_result(http: httpx.Client) -> None:
    messages = [user(), assistant(use("toolu_a")), user(result("toolu_a"), result("toolu_b"))]
    response = http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": messages})
    assert error_of(response) == UNEXPECTED.format(n=2, m=1, id="toolu_b")
