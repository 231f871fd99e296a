"""Thinking blocks from a model that reasons in <think> tags (spec §3.7, §4, §6).

`smollm2-think` is the default model configured with `reasoning = true`: it is not really a
reasoning model, so it rarely closes its thinking itself, and the budget is what ends it. That is
what these tests need: a thinking block, cut at the budget, signed by the server, then the answer.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

THINK = {"type": "enabled", "budget_tokens": 1024}
QUESTION = [{"role": "user", "content": "What is 12 times 12?"}]


@pytest.fixture(scope="module")
def thought(client: anthropic.Anthropic) -> anthropic.types.Message:
    return client.messages.create(model="smollm2-think", max_tokens=1100, thinking=THINK, messages=QUESTION)


def test_thinking_comes_first_and_is_signed(thought: anthropic.types.Message) -> None:
    block = thought.content[0]
    assert block.type == "thinking" and block.signature.startswith("m1.")
    assert 0 < thought.usage.output_tokens_details.thinking_tokens <= 1024
    assert thought.usage.output_tokens_details.thinking_tokens <= thought.usage.output_tokens


def test_a_signed_thinking_block_goes_back_and_an_edited_one_is_refused(
    client: anthropic.Anthropic, http: httpx.Client, thought: anthropic.types.Message
) -> None:
    assistant = {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in thought.content]}
    follow_up = [*QUESTION, assistant, {"role": "user", "content": "Thanks!"}]
    assert client.messages.count_tokens(model="smollm2-think", messages=follow_up).input_tokens > 0
    edited = json.loads(json.dumps(follow_up))
    edited[1]["content"][0]["thinking"] += " (edited)"
    response = http.post("/v1/messages/count_tokens", json={"model": "smollm2-think", "messages": edited})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "messages.1.content.0: Invalid `signature` in `thinking` block"


def test_stream_sends_thinking_deltas_then_one_signature_before_the_stop(http: httpx.Client) -> None:
    body = {"model": "smollm2-think", "max_tokens": 1100, "stream": True, "thinking": THINK, "messages": QUESTION}
    with http.stream("POST", "/v1/messages", json=body) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    start = next(e for e in events if e["type"] == "content_block_start")
    assert start["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    first_block = [e for e in events if e.get("index") == 0]
    kinds = [e["delta"]["type"] for e in first_block if e["type"] == "content_block_delta"]
    assert kinds[-1] == "signature_delta" and kinds.count("signature_delta") == 1
    assert set(kinds[:-1]) == {"thinking_delta"}
    assert first_block[-1]["type"] == "content_block_stop"


def test_thinking_off_or_omitted(client: anthropic.Anthropic) -> None:
    plain = client.messages.create(model="smollm2-think", max_tokens=40, messages=QUESTION)
    assert all(block.type != "thinking" for block in plain.content)
    assert plain.usage.output_tokens_details.thinking_tokens == 0
    omitted = client.messages.create(
        model="smollm2-think",
        max_tokens=1100,
        thinking={**THINK, "display": "omitted"},
        messages=QUESTION,
    )
    block = omitted.content[0]
    assert block.type == "thinking" and block.thinking == "" and block.signature
    assert omitted.usage.output_tokens_details.thinking_tokens > 0


def test_a_model_that_does_not_reason_gives_no_thinking_blocks(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=1100, thinking=THINK, messages=QUESTION)
    assert all(block.type != "thinking" for block in message.content)
    assert message.usage.output_tokens_details.thinking_tokens == 0
