"""The embedded engine runs in a process of its own: when it dies (here: SIGKILL, as a native crash
would), the stream in flight ends with an `event: error`, the ledger settles it, the API keeps
answering, and the engine comes back by itself.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
from conftest import COUNTING, Server, launch, stop

CONFIG = """
default_model = "smollm2-135m-instruct"
[local]
threads = 1
[[models]]
id = "smollm2-135m-instruct"
context_window = 2048
"""


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process, server = launch(tmp_path_factory.mktemp("isolated"), CONFIG)
    try:
        yield server
    finally:
        stop(process)


def engine_pid(server: Server, after: int = 0) -> int:
    return int(server.wait_for_log(r"engine process (\d+) ready", 60, after).group(1))


def test_a_dead_engine_process_ends_its_streams_cleanly_and_comes_back(isolated: Server, tmp_path: Path) -> None:
    client = anthropic.Anthropic(base_url=isolated.base_url, api_key=isolated.api_key, max_retries=0, timeout=60)
    pid = engine_pid(isolated)
    seen: list[str] = []
    errors: list[Exception] = []

    def stream() -> None:
        try:
            with client.messages.stream(model="smollm2-135m-instruct", max_tokens=500, messages=COUNTING) as events:
                for text in events.text_stream:
                    seen.append(text)
        except anthropic.APIError as error:
            errors.append(error)

    streaming = threading.Thread(target=stream)
    streaming.start()
    deadline = time.monotonic() + 60
    while len(seen) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    mark = len(isolated.log())
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    # the API answers while the engine is away; a request for the engine meanwhile is a retryable 529
    models = httpx.get(isolated.base_url + "/v1/models", headers={"x-api-key": isolated.api_key,
                                                                  "anthropic-version": "2023-06-01"}, timeout=5)
    assert models.status_code == 200
    streaming.join(30)
    assert len(seen) >= 5 and errors and "engine process stopped" in str(errors[0])
    error = errors[0]
    assert isinstance(error, anthropic.APIStatusError) and error.request_id
    assert isinstance(error.body, dict) and error.body["request_id"] == error.request_id

    new_pid = engine_pid(isolated, mark)
    restarted_in = time.monotonic() - killed_at
    assert new_pid != pid
    print(f"engine restarted in {restarted_in:.1f} s")
    message = client.messages.create(
        model="smollm2-135m-instruct", max_tokens=5, messages=[{"role": "user", "content": "Say hi."}]
    )
    assert message.content
    settled = re.findall(r"settled (\w+) .*engine=local", isolated.log()[mark:])
    assert "failed" in settled and "succeeded" in settled


def test_a_request_prepared_by_a_process_that_died_is_retryable_not_a_500() -> None:
    """Found by bench/soak.py: prepared (counted) in the engine process that then died, and sent to the
    new one for its generation, a request got a 500. It gets the 529 that the SDKs retry."""
    import asyncio

    from missive.engines.base import EngineUnavailable, Generation
    from missive.engines.local.process import ProcessEngine
    from missive.settings import LocalEngineSettings, ModelSettings
    from missive.wire import requests as rq
    from missive.wire.validate import normalize

    async def run() -> None:
        engine = ProcessEngine([ModelSettings(id="smollm2-135m-instruct", context_window=2048)],
                               LocalEngineSettings(threads=1))
        await engine.start()
        try:
            body = b'{"model": "smollm2-135m-instruct", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}'
            params = rq.parse_body(body, rq.MessageCreateParams)
            generation = Generation(engine.models()[0], params, normalize(params))
            prepared = await engine.prepare(generation)
            dead = engine._process
            assert dead is not None and dead.pid is not None
            os.kill(dead.pid, signal.SIGKILL)
            for _ in range(600):  # until the new process is ready
                await asyncio.sleep(0.05)
                if engine._process is not dead and engine._ready is not None and engine._ready.is_set():
                    break
            events = prepared.generate()
            with pytest.raises(EngineUnavailable) as refused:
                await anext(events)
            assert refused.value.status == 529
            again = await engine.prepare(generation)  # the new process serves
            assert [event async for event in again.generate()]
        finally:
            await engine.close()

    asyncio.run(run())


def test_the_engine_messages_come_whole_out_of_any_cut_of_the_pipe_bytes() -> None:
    from missive.engines.local import frames
    from missive.wire.events import Delta, Finished, Usage

    step = [("event", 1, Delta("text", "é" * 5)), ("event", 2, Finished("end_turn", Usage(3, 4)))]
    messages = [("ready",), ("batch", step), ("result", 3, b"x" * 200_000),
                ("error", 4, 529, "Overloaded", {"retry-after": "2"}, True)]
    data = b"".join(frames.encode(message) for message in messages)
    for cut in (1, 3, 7, 4096, 65536, len(data)):
        reader = frames.Reader()
        got = [message for start in range(0, len(data), cut) for message in reader.feed(data[start : start + cut])]
        assert got == messages


def test_a_request_larger_than_the_pipe_holds_reaches_the_engine_process() -> None:
    """Found by test_fuzz.py: the API process reads the engine's pipe on its event loop, which makes that
    pipe non-blocking; a request sent on the same pipe and larger than its buffer then failed with a 529
    ("the engine is restarting") and the engine was taken for dead. Requests go on a pipe of their own."""
    import json

    import uvloop  # the loop the server runs on: it is the one that makes a pipe it reads non-blocking

    from missive.engines.base import Generation
    from missive.engines.local.process import ProcessEngine
    from missive.settings import LocalEngineSettings, ModelSettings
    from missive.wire import requests as rq
    from missive.wire.errors import ApiError
    from missive.wire.validate import normalize

    def generation(engine: ProcessEngine, text: str) -> Generation:
        body = json.dumps({"model": "smollm2-135m-instruct", "max_tokens": 4,
                           "messages": [{"role": "user", "content": text}]}).encode()
        params = rq.parse_body(body, rq.MessageCreateParams)
        return Generation(engine.models()[0], params, normalize(params))

    async def run() -> None:
        engine = ProcessEngine([ModelSettings(id="smollm2-135m-instruct", context_window=2048)],
                               LocalEngineSettings(threads=1))
        await engine.start()
        try:
            with pytest.raises(ApiError) as refused:
                await engine.count_tokens(generation(engine, "word " * 200_000))  # 1 MB of prompt
            assert refused.value.status == 400 and "prompt is too long" in refused.value.message
            assert engine.restarts == 0
            assert await engine.count_tokens(generation(engine, "Hi")) > 0
        finally:
            await engine.close()

    uvloop.run(run())
