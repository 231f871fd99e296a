"""Speculative decoding by prompt lookup: greedy output with it on is the output with it off, token for token.

The engine runs in this process (not the shared `server` fixture): speculation is an engine setting, and
the tests switch it between requests on one model instance (`scheduler.settings.speculative`), which a
server in another process does not allow. The KV cache is q8_0, where a verification pass is exact at
any length (bench/verify_identity.py), so the copy-heavy prompt of about 1k tokens speculates too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from missive import metrics
from missive.engines.base import Generation
from missive.engines.local.engine import LocalEngine
from missive.engines.local.lookup import PromptLookup
from missive.engines.local.passes import exact_positions
from missive.engines.local.scheduler import Scheduler
from missive.settings import LocalEngineSettings, ModelSettings
from missive.wire import requests as rq
from missive.wire import validate
from missive.wire.events import Delta, Finished

pytestmark = pytest.mark.timeout(600)  # prompts of 1k tokens, each run twice, on a shared machine

COLOURS, PEOPLE, COUNTS, PLACES = ("red", "grey", "tall"), ("keeper", "sailor", "baker", "weaver"), ("two", "nine"), (
    "harbour",
    "mill",
    "bridge",
)
LINES = [f"the {c} {p} keeps {n} lanterns by the {w}." for c in COLOURS for p in PEOPLE for n in COUNTS for w in PLACES]
PASSAGE = " ".join(f"Line {i}: {line}" for i, line in enumerate(LINES[:60]))  # about 1k tokens, no line twice
COPY = f"Repeat this text exactly, line by line:\n\n{PASSAGE}"
PROSE = ["Write a story about a lighthouse.", "Explain how rain forms.", "Describe the city of Lisbon."]


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    models = [ModelSettings(id="m", context_window=2048)]
    local = LocalEngineSettings(parallel=4, prompt_cache_mib=0, speculative=True, kv_cache_type="q8_0",
                                speculative_max_sequences=4)  # guesses beside other sequences too
    engine = LocalEngine(models, local)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


@pytest.fixture
def scheduler(engine: LocalEngine) -> Iterator[Scheduler]:
    scheduler = engine.schedulers["m"]
    yield scheduler
    scheduler.settings.speculative = True


async def answer(engine: LocalEngine, text: str, max_tokens: int) -> tuple[str, int, int, str]:
    """Text, input and output tokens, stop reason."""
    body = {"model": "m", "max_tokens": max_tokens, "temperature": 0, "messages": [{"role": "user", "content": text}]}
    params = rq.MessageCreateParams.model_validate(body)
    prepared = await engine.prepare(Generation(engine.models()[0], params, validate.normalize(params), "wrk_a"))
    pieces, finished = [], None
    async for event in prepared.generate():
        if isinstance(event, Delta):
            pieces.append(event.text)
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None
    return "".join(pieces), finished.usage.input_tokens, finished.usage.output_tokens, finished.stop_reason


def run(scheduler: Scheduler, engine: LocalEngine, speculative: bool, texts: list[str], max_tokens: int) -> list:
    scheduler.settings.speculative = speculative

    async def together() -> list:
        return await asyncio.gather(*(answer(engine, text, max_tokens) for text in texts))

    return asyncio.run(together())


def test_prompt_lookup_guesses_what_followed_the_last_ngram() -> None:
    lookup = PromptLookup([5, 1, 2, 3, 4, 9, 1, 2], n=2)
    assert lookup.draft(3) == [3, 4, 9]  # (1, 2) was followed by 3, 4, 9
    lookup.append(7)
    assert lookup.draft(3) == []  # (2, 7) never occurred before
    lookup.append(1)
    lookup.append(2)
    assert lookup.draft(2) == [7, 1]  # the latest occurrence of (1, 2) wins
    assert PromptLookup([1], n=3).draft(4) == []


def test_speculation_is_exact_only_where_the_kernels_are() -> None:
    assert exact_positions(LocalEngineSettings(kv_cache_type="q8_0"), 4096) == 4096
    # f16: a lone query past 256 positions takes another path
    assert exact_positions(LocalEngineSettings(kv_cache_type="f16"), 4096) == 256
    assert exact_positions(LocalEngineSettings(flash_attention=False, kv_cache_type="q8_0"), 4096) == 0


def test_copy_heavy_output_is_the_same_with_and_without_speculation(engine: LocalEngine, scheduler: Scheduler) -> None:
    off = run(scheduler, engine, False, [COPY], 64)
    drafted, accepted = scheduler.drafted, scheduler.accepted
    on = run(scheduler, engine, True, [COPY], 64)
    assert on == off  # text, usage and stop reason
    assert off[0][1] > 900  # the passage is about 1k tokens: speculation ran past 256 positions
    assert scheduler.drafted > drafted and scheduler.accepted > accepted  # it guessed, and some guesses held


def test_prose_and_concurrent_sequences_are_the_same_with_and_without_speculation(
    engine: LocalEngine, scheduler: Scheduler
) -> None:
    alone = [run(scheduler, engine, False, [text], 48)[0] for text in [*PROSE, COPY]]
    assert run(scheduler, engine, True, [*PROSE, COPY], 48) == alone  # four sequences decoding together


def test_a_step_of_more_sequences_than_the_setting_does_not_speculate(
    engine: LocalEngine, scheduler: Scheduler
) -> None:
    scheduler.settings.speculative_max_sequences = 1
    try:
        run(scheduler, engine, True, [COPY], 24)  # alone: guesses
        drafted = scheduler.drafted
        assert drafted > 0
        run(scheduler, engine, True, [COPY, COPY.replace("a", "the a")], 24)
        during_pair = scheduler.drafted - drafted
    finally:
        scheduler.settings.speculative_max_sequences = 4
    # together, no step guesses while both decode; one may guess after the other has finished
    assert during_pair < drafted


def test_sampled_requests_do_not_speculate(engine: LocalEngine, scheduler: Scheduler) -> None:
    drafted = scheduler.drafted
    scheduler.settings.speculative = True

    async def sampled() -> None:
        body = {"model": "m", "max_tokens": 24, "temperature": 1, "messages": [{"role": "user", "content": COPY}]}
        params = rq.MessageCreateParams.model_validate(body)
        prepared = await engine.prepare(Generation(engine.models()[0], params, validate.normalize(params), "wrk_a"))
        async for _ in prepared.generate():
            pass

    asyncio.run(sampled())
    assert scheduler.drafted == drafted


def test_acceptance_is_in_the_metrics(engine: LocalEngine, scheduler: Scheduler) -> None:
    run(scheduler, engine, True, [COPY], 16)
    text = generate_latest(metrics.ENGINE_REGISTRY).decode()
    for name in (
        "missive_speculative_draft_tokens_total",
        "missive_speculative_accepted_tokens_total",
        "missive_speculative_acceptance_rate",
    ):
        assert f'{name}{{model="m"}}' in text, name
    rate = metrics.SPECULATIVE_ACCEPTANCE.labels(model="m")._value.get()
    assert 0 < rate <= 1
