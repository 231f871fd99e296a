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


# --- reasoning read from the chat template ------------------------------------------------------


def test_reasoning_is_read_from_the_template_and_the_setting_overrides_it() -> None:
    from pathlib import Path

    from missive.engines.local.model import reasons
    from missive.engines.local.thinking import opened_by_template, template_reasons
    from missive.settings import ModelSettings

    templates = Path(__file__).parent / "templates"
    assert template_reasons("{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}")  # R1 distills
    assert template_reasons("{% set content = content.split('</think>')[-1] %}")
    assert not template_reasons((templates / "hermes.jinja").read_text())
    glm = str(templates / "glm45.jinja")  # GLM-4.5 writes <think></think> on past turns
    assert reasons(ModelSettings(id="x", chat_template_file=glm))
    assert not reasons(ModelSettings(id="x", chat_template_file=glm, reasoning=False))
    assert not reasons(ModelSettings(id="x")) and reasons(ModelSettings(id="x", reasoning=True))
    # a template that opens the thinking itself is not opened twice
    assert opened_by_template("<|Assistant|><think>\n", "<think>\n") == ""
    assert opened_by_template("<|Assistant|><think>\n", "<think>\n\n</think>\n\n") == "\n</think>\n\n"
    assert opened_by_template("<|im_start|>assistant\n", "<think>\n") == "<think>\n"


def test_the_template_is_read_from_the_gguf_as_llama_cpp_reads_it() -> None:
    from llama_cpp import _internals, llama_model_default_params

    from missive.engines.local import gguf
    from missive.engines.local.default_model import default_model_path

    params = llama_model_default_params()
    params.vocab_only = True
    model = _internals.LlamaModel(path_model=str(default_model_path()), params=params, verbose=False)
    try:
        assert gguf.chat_template(default_model_path()) == model.metadata()["tokenizer.chat_template"]
    finally:
        model.close()


def test_a_model_whose_template_shows_think_streams_thinking(client: anthropic.Anthropic, server) -> None:
    """`smollm2-glm45` sets no `reasoning`: its template (GLM-4.5's shape) makes it a reasoning model."""
    server.wait_for_log(r"model smollm2-glm45: reasons in <think> \(read from the chat template\)")
    server.wait_for_log(r"model smollm2-hermes: does not reason in <think> \(read from the chat template\)")
    seen: list[str] = []  # the stream's first events: enough to see a thinking block open and fill
    with client.messages.stream(model="smollm2-glm45", max_tokens=1100, thinking=THINK, messages=QUESTION) as stream:
        for event in stream:
            if event.type == "message_start":
                input_tokens = event.message.usage.input_tokens
            elif event.type == "content_block_start":
                seen.append(event.content_block.type)
            elif event.type == "content_block_delta":
                seen.append(event.delta.type)
                break  # closing the stream cancels the rest (a budget of 1024 takes a while here)
    assert seen == ["thinking", "thinking_delta"], seen
    counted = client.messages.count_tokens(model="smollm2-glm45", thinking=THINK, messages=QUESTION)
    assert counted.input_tokens == input_tokens
    plain = client.messages.create(model="smollm2-glm45", max_tokens=20, messages=QUESTION)
    assert all(block.type != "thinking" for block in plain.content)
