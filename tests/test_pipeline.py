"""The pipeline with fake engines: admission before a slot, fallback before the first event only, the
circuit breaker, release of what was charged, the ledger naming the engine, signing by the right engine.

The gateway underneath is real (SQLite ledger, in-memory buckets); only the engines are fakes, which
lets these tests make an engine fail exactly when they want.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from missive.engines.base import EngineUnavailable, Generation
from missive.engines.breaker import Breaker
from missive.engines.registry import Registry
from missive.gateway.auth import Principal
from missive.gateway.policy import Policy
from missive.pipeline import Call, Pipeline
from missive.settings import Settings
from missive.store import db as store_db
from missive.store.ledger import Record
from missive.wire.betas import parse_betas
from missive.wire.errors import ApiError
from missive.wire.events import BlockStart, BlockStop, Delta, Event, Finished, Started, Usage
from missive.wire.ids import new_id
from missive.wire.models import Capabilities, ModelCard


class FakeEngine:
    """Serves one model; `fail` says how: None (serve), "prepare", "first" (before Started), "after"."""

    signs_thinking = False
    fetches_urls = False

    def __init__(self, name: str, model: str, fail: str | None = None, thinking: bool = False) -> None:
        self.name, self.fail, self.thinking = name, fail, thinking
        self.card = ModelCard(model, model, 1000, 100, capabilities=Capabilities(thinking=True))
        self.generated = 0  # slots taken

    def models(self) -> list[ModelCard]:
        return [self.card]

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def count_tokens(self, generation: Generation) -> int:
        return 7

    async def prepare(self, generation: Generation) -> FakePrepared:
        if self.fail == "prepare":
            raise EngineUnavailable(529, f"{self.name} is down")
        return FakePrepared(self)


class FakePrepared:
    input_tokens = 7

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    async def generate(self) -> AsyncIterator[Event]:
        self.engine.generated += 1
        if self.engine.fail == "first":
            raise EngineUnavailable(503, f"{self.engine.name} answered 503")
        yield Started(Usage(input_tokens=7))
        if self.engine.thinking:
            yield BlockStart("thinking")
            yield Delta("thinking", "hmm")
            if self.engine.signs_thinking:
                yield Delta("signature", "upstream-signature")
            yield BlockStop()
        yield BlockStart("text")
        yield Delta("text", f"from {self.engine.name}")
        if self.engine.fail == "after":
            raise EngineUnavailable(503, "cut")
        yield BlockStop()
        yield Finished("end_turn", Usage(input_tokens=7, output_tokens=3))


@pytest.fixture
def database(tmp_path: Path) -> sa.Engine:
    return store_db.connect(tmp_path / "missive.db")


def make_pipeline(database: sa.Engine, engines: list[FakeEngine], routes: dict[str, list[str]], **settings: Any):
    config = Settings(default_model=engines[0].card.id, **settings)
    registry = Registry(engines, {}, config.default_model, True, routes)  # type: ignore[arg-type]
    return Pipeline(registry, Policy(config, database), b"k" * 32)


def call() -> Call:
    return Call(Principal("key_test", "default"), "2023-06-01", parse_betas(None), new_id("req_"))


def body(model: str, **extra: Any) -> bytes:
    return json.dumps({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **extra}).encode()


async def run(pipeline: Pipeline, model: str) -> tuple[list[Event], str]:
    reply = await pipeline.create(call(), body(model))
    events = [reply.first, *[event async for event in reply.events]]
    return events, "".join(event.text for event in events if isinstance(event, Delta) and event.kind == "text")


def rows(database: sa.Engine) -> list[dict[str, Any]]:
    with database.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.text("select * from usage_records"))]


def test_fallback_before_the_first_event_and_the_ledger_names_the_engine_that_served(database: sa.Engine) -> None:
    down, also_down, up = FakeEngine("a", "m-a", "prepare"), FakeEngine("b", "m-b", "first"), FakeEngine("c", "m-c")
    pipeline = make_pipeline(database, [down, also_down, up], {"m": ["m-a", "m-b", "m-c"]})
    _, text = asyncio.run(run(pipeline, "m"))
    assert text == "from c"
    [row] = rows(database)
    assert (row["engine"], row["model"], row["requested_model"], row["status"]) == ("c", "m-c", "m", "succeeded")


def test_no_fallback_once_the_engine_started(database: sa.Engine) -> None:
    cut, spare = FakeEngine("a", "m-a", "after"), FakeEngine("b", "m-b")
    pipeline = make_pipeline(database, [cut, spare], {"m": ["m-a", "m-b"]})
    with pytest.raises(EngineUnavailable):
        asyncio.run(run(pipeline, "m"))
    assert spare.generated == 0
    [row] = rows(database)
    assert (row["engine"], row["status"]) == ("a", "failed")


def test_every_target_down_is_the_last_error_and_nothing_is_recorded(database: sa.Engine) -> None:
    pipeline = make_pipeline(database, [FakeEngine("a", "m-a", "prepare"), FakeEngine("b", "m-b", "first")],
                             {"m": ["m-a", "m-b"]})
    with pytest.raises(EngineUnavailable, match="503"):
        asyncio.run(run(pipeline, "m"))
    assert rows(database) == []


def test_the_record_is_written_while_the_engine_prepares_its_first_event(database: sa.Engine) -> None:
    """The ledger's commit overlaps the engine's work towards its first event (a prefill, an upstream's
    first token) instead of following it; the record is in flight before that event, naming the engine,
    with admission's count, and the engine's own count of the input is saved at the next checkpoint."""
    seen: list[list[dict[str, Any]]] = []

    class Slow(FakeEngine):
        async def prepare(self, generation: Generation) -> FakePrepared:
            prepared = FakePrepared(self)
            prepared.input_tokens = 5  # admission's estimate; the engine counts 7 at its first event
            inner = prepared.generate

            async def generate() -> AsyncIterator[Event]:
                await anyio.sleep(0.3)  # the prefill: the record is committed meanwhile
                seen.append(rows(database))
                async for event in inner():
                    yield event

            prepared.generate = generate  # type: ignore[method-assign]
            return prepared

    pipeline = make_pipeline(database, [Slow("a", "m-a")], {})

    async def scenario() -> None:
        reply = await pipeline.create(call(), body("m-a"))
        await pipeline.policy.ledger.checkpoint()
        seen.append(rows(database))
        async for _ in reply.events:
            pass

    asyncio.run(scenario())
    [[before], [checkpointed]] = seen
    assert (before["engine"], before["status"], before["input_tokens"]) == ("a", "in_flight", 5)
    assert (checkpointed["status"], checkpointed["input_tokens"]) == ("in_flight", 7)
    [settled] = rows(database)
    assert (settled["status"], settled["input_tokens"], settled["output_tokens"]) == ("succeeded", 7, 3)


def test_a_refused_request_never_takes_a_slot(database: sa.Engine) -> None:
    engine = FakeEngine("a", "m-a")
    tiny = {"default_tier": "tiny", "tiers": {"tiny": {"input_tokens_per_minute": 10}}}
    pipeline = make_pipeline(database, [engine], {}, rate_limits=tiny)
    asyncio.run(run(pipeline, "m-a"))  # 7 of 10 input tokens this minute
    with pytest.raises(ApiError) as refused:
        asyncio.run(run(pipeline, "m-a"))
    assert refused.value.status == 429 and "anthropic-ratelimit-input-tokens-limit" in refused.value.headers
    assert engine.generated == 1 and len(rows(database)) == 1


def test_the_breaker_sends_requests_to_the_healthy_engine_first(database: sa.Engine) -> None:
    flaky, steady = FakeEngine("a", "m-a", "first"), FakeEngine("b", "m-b")
    pipeline = make_pipeline(database, [flaky, steady], {"m": ["m-a", "m-b"]})
    for _ in range(5):
        assert asyncio.run(run(pipeline, "m"))[1] == "from b"
    assert flaky.generated == Breaker().failures  # then out of rotation: not asked any more


def test_thinking_is_signed_by_missive_for_its_engines_and_passed_through_for_upstreams(database: sa.Engine) -> None:
    local, upstream = FakeEngine("a", "m-a", thinking=True), FakeEngine("b", "m-b", thinking=True)
    upstream.signs_thinking = True  # type: ignore[misc]
    pipeline = make_pipeline(database, [local, upstream], {})

    def signatures(model: str) -> list[str]:
        events, _ = asyncio.run(run(pipeline, model))
        return [event.text for event in events if isinstance(event, Delta) and event.kind == "signature"]

    [ours] = signatures("m-a")
    assert ours != "upstream-signature"
    assert signatures("m-b") == ["upstream-signature"]


def test_breaker_opens_after_failures_and_probes_back() -> None:
    now = [0.0]
    breaker = Breaker(failures=2, cool_down=10, clock=lambda: now[0])
    breaker.failed()
    assert breaker.allows()
    breaker.failed()
    assert breaker.state == "open" and not breaker.allows()
    now[0] = 10
    assert breaker.allows() and not breaker.allows()  # one probe at a time
    breaker.failed()  # the probe failed: open again
    assert not breaker.allows()
    now[0] = 20
    assert breaker.allows()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allows()
    breaker.failed()
    now[0] = 30
    breaker.failed()
    now[0] = 40
    assert breaker.allows()  # a probe that never reports lets another through after the cool-down
    now[0] = 50
    assert breaker.allows()


def test_progress_is_saved_by_tokens_as_well_as_by_time(database: sa.Engine) -> None:
    """A checkpoint follows the output: long before the next timed one, a record that ran
    `checkpoint_tokens` ahead is saved, so a crash loses at most about that much."""
    settings = Settings(ledger={"checkpoint_interval": 60, "checkpoint_tokens": 8, "checkpoint_spacing": 0.05})
    ledger = Policy(settings, database).ledger

    async def scenario() -> list[int]:
        record = Record(
            id=new_id("req_"), ts=0, instance_id="", key_id="k", workspace_id="default", model="m",
            requested_model="m", service_tier="standard",
        )
        await ledger.open(record)
        saved = []
        async with anyio.create_task_group() as upkeep:
            upkeep.start_soon(ledger.run)
            await anyio.sleep(0.2)  # the first (timed) tick has run
            for output in (5, 12, 30):
                ledger.progress(record.id, output)
                await anyio.sleep(0.3)
                saved.append(rows(database)[0]["output_tokens"])
            upkeep.cancel_scope.cancel()
        return saved

    assert asyncio.run(scenario()) == [0, 12, 30]  # 5 is fewer than 8 ahead: it waits for the timer
