"""Routes and fallback between real servers: a front Missive whose route prefers an upstream Missive (the
Anthropic-compatible engine) and falls back to its own embedded model, only before the first byte.

The upstream answers 529 when busy (one sequence, no queue), dies in the middle of a stream, and comes
back: the client sees a fallback, an `event: error` for the stream that was cut, and the upstream
back in rotation after the circuit breaker's cool-down.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
from conftest import COUNTING, Server, free_port, launch, stop

UPSTREAM = """
default_model = "smollm2-135m-instruct"
[local]
threads = 1
parallel = 1
max_queue = 0
[[models]]
id = "smollm2-135m-instruct"
context_window = 2048
"""

FRONT = """
default_model = "smollm2-135m-instruct"
[local]
threads = 1
parallel = 2
[[models]]
id = "smollm2-135m-instruct"
context_window = 2048

[[engines]]
name = "upstream"
kind = "anthropic"
url = "http://127.0.0.1:{port}"
api_key_env = "MISSIVE_TEST_UPSTREAM_KEY"
first_token_timeout = 20

[[engines.models]]
id = "upstream-smollm2"
upstream = "smollm2-135m-instruct"
context_window = 2048

[[routes]]
model = "claude-sonnet-4-6"
to = ["upstream-smollm2", "smollm2-135m-instruct"]

[circuit_breaker]
failures = 2
cool_down = 2.0
"""
ASK = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "Say hi."}]}


class Upstream:
    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.process, self.server = launch(root, UPSTREAM, "upstream.log", self.port)

    def stop(self) -> None:
        stop(self.process, hard=True)

    def restart(self) -> None:
        self.process, self.server = launch(self.root, UPSTREAM, "upstream-again.log", self.port)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Upstream, Server]]:
    upstream = Upstream(tmp_path_factory.mktemp("upstream"))
    os.environ["MISSIVE_TEST_UPSTREAM_KEY"] = upstream.server.api_key
    try:
        process, front = launch(tmp_path_factory.mktemp("front"), FRONT.format(port=upstream.port), "front.log")
    finally:
        del os.environ["MISSIVE_TEST_UPSTREAM_KEY"]
    try:
        yield upstream, front
    finally:
        stop(process)
        upstream.stop()


def served(front: Server) -> dict[tuple[str, str], float]:
    """The front's per-engine request counts, by (engine, outcome), and its fallbacks as (engine, "fallback")."""
    text = httpx.get(front.base_url + "/metrics").text
    counts = {}
    for engine, outcome, value in re.findall(
        r'^missive_engine_requests_total\{engine="([^"]+)",outcome="([^"]+)"\} (\S+)$', text, re.M
    ):
        counts[(engine, outcome)] = float(value)
    for engine, value in re.findall(r'^missive_fallbacks_total\{engine="([^"]+)"\} (\S+)$', text, re.M):
        counts[(engine, "fallback")] = float(value)
    return counts


def delta(before: dict, after: dict) -> dict:
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


def client(front: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=front.base_url, api_key=front.api_key, max_retries=0, timeout=60)


def test_the_route_prefers_the_upstream_and_lists_as_a_model(pair: tuple[Upstream, Server]) -> None:
    _, front = pair
    before = served(front)
    message = client(front).messages.create(**ASK)
    assert message.model == "claude-sonnet-4-6" and message.usage.input_tokens > 0
    assert delta(before, served(front)) == {("upstream", "succeeded"): 1}
    listed = [model.id for model in client(front).models.list(limit=100)]
    assert {"claude-sonnet-4-6", "upstream-smollm2", "smollm2-135m-instruct"} <= set(listed)


def test_an_upstream_that_answers_529_falls_back_to_the_local_model(pair: tuple[Upstream, Server]) -> None:
    upstream, front = pair
    busy = anthropic.Anthropic(base_url=upstream.server.base_url, api_key=upstream.server.api_key, max_retries=0)
    with busy.messages.stream(model="smollm2-135m-instruct", max_tokens=300, messages=COUNTING) as held:
        next(iter(held.text_stream))  # the upstream's only sequence is taken: it answers 529 to the next
        before = served(front)
        message = client(front).messages.create(**ASK)  # the client sees a 200, from the local model
    assert message.content and message.stop_reason in ("end_turn", "max_tokens")
    assert delta(before, served(front)) == {
        ("upstream", "unavailable"): 1,
        ("upstream", "fallback"): 1,
        ("local", "succeeded"): 1,
    }


def test_a_cut_stream_is_an_error_then_requests_fall_back_and_the_upstream_is_probed_back(
    pair: tuple[Upstream, Server],
) -> None:
    upstream, front = pair
    seen: list[str] = []
    errors: list[Exception] = []

    def kill_after_a_few_deltas() -> None:
        while len(seen) < 3:
            time.sleep(0.01)
        upstream.stop()

    killer = threading.Thread(target=kill_after_a_few_deltas)
    killer.start()
    try:
        with client(front).messages.stream(**{**ASK, "max_tokens": 400, "messages": COUNTING}) as stream:
            for text in stream.text_stream:
                seen.append(text)
    except anthropic.APIError as error:  # an `event: error` inside the stream
        errors.append(error)
    killer.join(30)
    assert len(seen) >= 3 and errors, "the stream was cut after its first byte: no fallback, an error event"

    before = served(front)
    for _ in range(3):  # the upstream refuses connections: each request falls back, then it is skipped
        assert client(front).messages.create(**ASK).content
    counts = delta(before, served(front))
    assert counts[("local", "succeeded")] == 3 and counts[("upstream", "unavailable")] == 2  # breaker: 2

    upstream.restart()
    time.sleep(2.5)  # the breaker's cool-down: the next request is the upstream's probe
    before = served(front)
    assert client(front).messages.create(**ASK).content
    assert delta(before, served(front)) == {("upstream", "succeeded"): 1}
