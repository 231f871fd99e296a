"""`messages.create` through the official SDK, against the real server and model."""

from __future__ import annotations

import anthropic
import pytest

MODEL = "claude-sonnet-4-6"  # an id applications hard-code; resolves to the default local model
HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]
# anthropic 1.x takes no sampling parameters as arguments (its MIGRATION.md): they go in `extra_body`.
GREEDY = {"temperature": 0}


def test_create_returns_a_message_in_the_claude_shape(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=24, messages=HELLO)
    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL  # the requested id is echoed
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.content and message.content[0].type == "text" and message.content[0].text
    assert message._request_id and message._request_id.startswith("req_")
    usage = message.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 24
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert usage.cache_creation.ephemeral_1h_input_tokens == 0
    assert usage.service_tier == "standard"


def test_every_usage_key_is_present_on_the_wire(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=4, messages=HELLO)
    assert raw.headers["content-type"] == "application/json"
    usage = raw.http_response.json()["usage"]
    for key in (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
        "service_tier",
    ):
        assert key in usage and usage[key] is not None, key


def test_max_tokens_stop(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "Tell me a long story about dragons."}]
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3
    assert message.stop_sequence is None


def test_end_turn_stop(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=400, extra_body=GREEDY, messages=[{"role": "user", "content": "Say hi."}]
    )
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens < 400


def test_stop_sequence_is_reported_and_excluded(client: anthropic.Anthropic) -> None:
    kwargs = dict(model=MODEL, max_tokens=60, extra_body=GREEDY, messages=[{"role": "user", "content": "Count from 1 to 20."}])
    free = client.messages.create(**kwargs).content[0].text
    # pick a stop sequence the model is known to produce at temperature 0
    stop = next(word for word in ("5", "3", "2", ",", " ") if word in free[1:])
    message = client.messages.create(**kwargs, stop_sequences=[stop, "NEVER-SEEN"])
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == stop
    text = message.content[0].text if message.content else ""
    assert stop not in text
    assert free.startswith(text)


def test_temperature_zero_is_deterministic(client: anthropic.Anthropic) -> None:
    kwargs = dict(model=MODEL, max_tokens=40, extra_body=GREEDY, messages=[{"role": "user", "content": "Name three fruits."}])
    first = client.messages.create(**kwargs).content[0].text
    client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)  # something else in between
    assert client.messages.create(**kwargs).content[0].text == first
    assert client.messages.create(**kwargs).content[0].text == first


def test_top_k_one_is_greedy(client: anthropic.Anthropic) -> None:
    prompt = [{"role": "user", "content": "Describe a cat in one sentence."}]
    greedy = client.messages.create(model=MODEL, max_tokens=30, extra_body=GREEDY, messages=prompt).content[0].text
    top1 = client.messages.create(
        model=MODEL, max_tokens=30, extra_body={"temperature": 1.0, "top_k": 1}, messages=prompt
    )
    assert top1.content[0].text == greedy


def test_sampling_at_temperature_one_varies(client: anthropic.Anthropic) -> None:
    prompt = [{"role": "user", "content": "Invent a name for a new planet."}]
    texts = {
        client.messages.create(model=MODEL, max_tokens=12, extra_body={"temperature": 1.0}, messages=prompt)
        .content[0]
        .text
        for _ in range(4)
    }
    assert len(texts) > 1


def test_top_p_tiny_is_greedy(client: anthropic.Anthropic) -> None:
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    greedy = client.messages.create(model=MODEL, max_tokens=20, extra_body=GREEDY, messages=prompt).content[0].text
    nucleus = client.messages.create(model=MODEL, max_tokens=20, extra_body={"top_p": 0.0001}, messages=prompt)
    assert nucleus.content[0].text == greedy


def test_prefill_is_continued_not_repeated(client: anthropic.Anthropic) -> None:
    prefill = "The three primary colours are"
    message = client.messages.create(
        model=MODEL,
        max_tokens=20,
        extra_body=GREEDY,
        messages=[
            {"role": "user", "content": "What are the three primary colours?"},
            {"role": "assistant", "content": prefill},
        ],
    )
    text = message.content[0].text
    assert not text.startswith(prefill)
    count = client.messages.count_tokens(
        model=MODEL,
        messages=[
            {"role": "user", "content": "What are the three primary colours?"},
            {"role": "assistant", "content": prefill},
        ],
    )
    assert message.usage.input_tokens == count.input_tokens


def test_consecutive_user_turns_are_merged(client: anthropic.Anthropic) -> None:
    split = [{"role": "user", "content": "Hello."}, {"role": "user", "content": "How are you?"}]
    joined = [{"role": "user", "content": [{"type": "text", "text": "Hello."}, {"type": "text", "text": "How are you?"}]}]
    a = client.messages.create(model=MODEL, max_tokens=16, extra_body=GREEDY, messages=split)
    b = client.messages.create(model=MODEL, max_tokens=16, extra_body=GREEDY, messages=joined)
    assert a.usage.input_tokens == b.usage.input_tokens
    assert a.content[0].text == b.content[0].text


def test_system_prompt_is_part_of_the_prompt(client: anthropic.Anthropic) -> None:
    short = client.messages.count_tokens(model=MODEL, system="Be brief.", messages=HELLO)
    longer = client.messages.count_tokens(
        model=MODEL, system=[{"type": "text", "text": "Be brief. You are a pirate and always talk like one."}], messages=HELLO
    )
    assert longer.input_tokens > short.input_tokens


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"messages": HELLO},
        {"messages": HELLO, "system": "Answer briefly."},
        {"messages": HELLO, "system": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Be kind."}]},
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": [{"type": "text", "text": "Tell me a joke."}]},
            ]
        },
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure:"}]},
    ],
)
def test_count_tokens_equals_create_input_tokens(client: anthropic.Anthropic, request_kwargs: dict) -> None:
    counted = client.messages.count_tokens(model=MODEL, **request_kwargs)
    created = client.messages.create(model=MODEL, max_tokens=1, **request_kwargs)
    assert counted.input_tokens == created.usage.input_tokens


def test_max_tokens_zero_generates_nothing(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=0, messages=HELLO)
    assert message.content == []
    assert message.usage.output_tokens == 0
    assert message.usage.input_tokens > 0


def test_generation_that_reaches_the_context_end_stops_with_its_own_reason(client: anthropic.Anthropic) -> None:
    # smollm2-small has a 256-token context and accepts max_tokens up to 200: the window ends first
    words = ["Please write a long story about a journey across the sea."]
    while client.messages.count_tokens(model="tiny", messages=[{"role": "user", "content": " ".join(words)}]).input_tokens < 236:
        words.append("The sea is wide.")
    messages = [
        {"role": "user", "content": " ".join(words)},
        {"role": "assistant", "content": "Once upon a time, there was a sailor named"},
    ]
    message = client.messages.create(model="tiny", max_tokens=200, extra_body=GREEDY, messages=messages)
    assert message.stop_reason == "model_context_window_exceeded"
    assert message.usage.input_tokens + message.usage.output_tokens > 256


def test_beta_namespace_works(client: anthropic.Anthropic) -> None:
    message = client.beta.messages.create(
        model=MODEL, max_tokens=4, messages=HELLO, betas=["interleaved-thinking-2025-05-14"]
    )
    assert message.usage.output_tokens > 0
    counted = client.beta.messages.count_tokens(model=MODEL, messages=HELLO)
    assert counted.input_tokens > 0


def test_async_client_and_concurrent_requests(server) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    async def main() -> list[anthropic.types.Message]:
        async with anthropic.AsyncAnthropic(base_url=server.base_url, api_key=server.api_key, max_retries=0) as aclient:
            return await asyncio.gather(
                *(aclient.messages.create(model=MODEL, max_tokens=8, extra_body=GREEDY, messages=HELLO) for _ in range(3))
            )

    results = asyncio.run(main())
    assert len({m.id for m in results}) == 3
    assert len({m.content[0].text for m in results}) == 1
