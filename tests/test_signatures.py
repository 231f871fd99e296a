"""Thinking-block signatures: sign and verify, the installation's key file, the rule, through the server."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from conftest import Server
from test_validation import error_of

from missive.store.secrets import THINKING_KEY_FILE, thinking_key
from missive.wire import requests as rq
from missive.wire.errors import ApiError
from missive.wire.signatures import sign_thinking, verify_thinking
from missive.wire.validate import check_thinking_signatures

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
MODEL = "claude-sonnet-4-6"
INVALID = "messages.{n}.content.{m}: Invalid `signature` in `thinking` block"

# --- sign and verify --------------------------------------------------------------------------


def test_signature_format_and_round_trip() -> None:
    signature = sign_thinking(KEY, "Let me think about the weather.")
    assert signature.startswith("m1.")
    assert signature == sign_thinking(KEY, "Let me think about the weather.")  # deterministic
    assert verify_thinking(KEY, "Let me think about the weather.", signature)


@pytest.mark.parametrize("text", ["", "ünïcödé ✓ thinking", "line\nbreaks\n\n", "x" * 100_000])
def test_any_text_verifies_including_empty(text: str) -> None:
    """Empty text is what `display: "omitted"` sends back; its signature still binds it."""
    assert verify_thinking(KEY, text, sign_thinking(KEY, text))


def test_tampering_is_detected() -> None:
    text = "The answer is 4."
    signature = sign_thinking(KEY, text)
    assert not verify_thinking(KEY, "The answer is 5.", signature)
    assert not verify_thinking(KEY, text + " ", signature)
    assert not verify_thinking(KEY, "", signature)
    assert not verify_thinking(OTHER_KEY, text, signature)
    assert not verify_thinking(KEY, text, signature[:-2] + ("A=" if signature[-2:] != "A=" else "B="))
    assert not verify_thinking(KEY, text, signature.replace("m1.", "m2.", 1))
    assert not verify_thinking(KEY, text, signature.removeprefix("m1."))
    assert not verify_thinking(KEY, text, "")
    assert not verify_thinking(KEY, text, "not a signature ✗")


def test_signature_of_one_text_does_not_sign_another() -> None:
    assert sign_thinking(KEY, "a") != sign_thinking(KEY, "b")
    assert sign_thinking(KEY, "a") != sign_thinking(OTHER_KEY, "a")


# --- the key file -----------------------------------------------------------------------------


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"
    key = thinking_key(data_dir)
    path = data_dir / THINKING_KEY_FILE
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == key.hex()
    assert thinking_key(data_dir) == key  # read back, not made again
    assert [entry.name for entry in data_dir.iterdir()] == [THINKING_KEY_FILE]  # no temporary left
    assert thinking_key(tmp_path / "elsewhere") != key  # each installation has its own


def test_a_damaged_key_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    (tmp_path / THINKING_KEY_FILE).write_text("not hex\n")
    with pytest.raises(RuntimeError, match="thinking.key must hold a 32-byte key in hex"):
        thinking_key(tmp_path)
    (tmp_path / THINKING_KEY_FILE).write_text("abcd\n")
    with pytest.raises(RuntimeError):
        thinking_key(tmp_path)


# --- the validation rule ----------------------------------------------------------------------


def thinking(text: str, signature: str) -> dict:
    return {"type": "thinking", "thinking": text, "signature": signature}


def conversation(*assistant_blocks: dict) -> list[dict]:
    return [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": [*assistant_blocks, {"type": "text", "text": "4."}]},
        {"role": "user", "content": "And 3 + 3?"},
    ]


def check(messages: list[dict], key: bytes = KEY) -> None:
    check_thinking_signatures([rq.MessageParam.model_validate(message) for message in messages], key)


def test_signed_redacted_and_omitted_blocks_pass() -> None:
    check(
        conversation(
            thinking("Two and two.", sign_thinking(KEY, "Two and two.")),
            {"type": "redacted_thinking", "data": "anything opaque, passed back intact"},
            thinking("", sign_thinking(KEY, "")),  # display: "omitted"
        )
    )
    check([{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize(
    "block",
    [
        thinking("Two and two make five.", sign_thinking(KEY, "Two and two.")),  # edited
        thinking("Two and two.", sign_thinking(OTHER_KEY, "Two and two.")),  # another installation's
        thinking("Two and two.", "EqQBCkgIARABGAIiQL-a-claude-api-signature"),  # made up
        thinking("Two and two.", ""),
    ],
)
def test_invalid_signatures_are_refused(block: dict) -> None:
    ok = thinking("fine", sign_thinking(KEY, "fine"))
    with pytest.raises(ApiError) as caught:
        check(conversation(ok, block))
    assert caught.value.status == 400
    assert caught.value.message == INVALID.format(n=1, m=1)


# --- through the server -----------------------------------------------------------------------


def server_key(server: Server) -> bytes:
    assert (server.data_dir / THINKING_KEY_FILE).is_file()  # made by the server at startup
    return bytes.fromhex((server.data_dir / THINKING_KEY_FILE).read_text().strip())


def test_forged_signature_is_refused(http: httpx.Client) -> None:
    messages = conversation(thinking("Two and two.", sign_thinking(OTHER_KEY, "Two and two.")))
    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": messages})
    assert error_of(response) == INVALID.format(n=1, m=0)
    response = http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": messages})
    assert error_of(response) == INVALID.format(n=1, m=0)


def test_block_signed_with_the_servers_key_is_accepted(http: httpx.Client, server: Server) -> None:
    key = server_key(server)
    messages = conversation(
        thinking("Two and two.", sign_thinking(key, "Two and two.")),
        {"type": "redacted_thinking", "data": "opaque"},
    )
    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": messages})
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    response = http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": messages})
    assert response.status_code == 200, response.text
    assert response.json()["input_tokens"] > 0
