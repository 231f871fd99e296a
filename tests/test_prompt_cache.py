"""Prompt caching (spec §8) on the real engine and model, in-process, with an injectable clock.

The engine runs in this process (not behind HTTP) so that its clock can be moved forward: TTL expiry
is tested without sleeping. Accounting rules are also tested on `plan` alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import COUNTING

from missive import metrics
from missive.engines.base import Generation
from missive.engines.local.engine import LocalEngine
from missive.engines.local.model import Prompt
from missive.engines.local.passes import PassShapes, chunk_ends, decoded, reusable
from missive.engines.local.prompt_cache import plan
from missive.settings import LocalEngineSettings, ModelSettings
from missive.wire import requests as rq
from missive.wire import validate
from missive.wire.errors import ApiError
from missive.wire.events import Delta, Event, Finished, Started

SYSTEM = "You are a meticulous librarian. " + "Shelve every book by author, then title, then year. " * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def engine(clock: Clock) -> Iterator[LocalEngine]:
    models = [ModelSettings(id="m", context_window=2048, min_cache_tokens=64)]
    local = LocalEngineSettings(parallel=2, max_queue=1, max_queue_wait=1.0, prompt_cache_mib=64)
    engine = LocalEngine(models, local, clock=clock)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.close())


def generation(engine: LocalEngine, workspace: str = "wrk_a", **body: Any) -> Generation:
    body = {"model": "m", "max_tokens": 4, "temperature": 0, **body}
    body.setdefault("messages", [{"role": "user", "content": "Where does Dune go?"}])
    params = rq.MessageCreateParams.model_validate(body)
    validate.check_breakpoints(params)
    return Generation(engine.models()[0], params, validate.normalize(params), workspace)


def run(engine: LocalEngine, gen: Generation) -> list[Event]:
    async def collect() -> list[Event]:
        return [event async for event in (await engine.prepare(gen)).generate()]

    return asyncio.run(collect())


def usage(engine: LocalEngine, gen: Generation) -> tuple[int, int, int, int]:
    events = run(engine, gen)
    started, finished = events[0], events[-1]
    assert isinstance(started, Started) and isinstance(finished, Finished)
    u = finished.usage
    assert (started.usage.input_tokens, started.usage.cache_read_input_tokens) == (u.input_tokens, u.cache_read_input_tokens)
    return u.input_tokens, u.cache_read_input_tokens, u.cache_write_5m_tokens, u.cache_write_1h_tokens


def cached_system(ttl: str | None = None) -> list[dict]:
    cache_control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return [{"type": "text", "text": SYSTEM, "cache_control": cache_control}]


def test_write_then_read_then_expire(engine: LocalEngine, clock: Clock) -> None:
    total = asyncio.run(engine.count_tokens(generation(engine, system=cached_system())))
    first = usage(engine, generation(engine, system=cached_system()))
    fresh, read, write_5m, write_1h = first
    assert read == 0 and write_1h == 0 and write_5m > 64 and fresh + write_5m == total

    assert usage(engine, generation(engine, system=cached_system())) == (fresh, write_5m, 0, 0)
    clock.now += 299  # a hit refreshes the lifetime...
    assert usage(engine, generation(engine, system=cached_system())) == (fresh, write_5m, 0, 0)
    clock.now += 299  # ...so 598 s after the write it is still there
    assert usage(engine, generation(engine, system=cached_system())) == (fresh, write_5m, 0, 0)
    clock.now += 301  # 5 minutes without a hit: expired, a miss and a new write
    assert usage(engine, generation(engine, system=cached_system())) == first


def test_one_hour_ttl(engine: LocalEngine, clock: Clock) -> None:
    system = [{"type": "text", "text": SYSTEM + " Hour.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    fresh, read, write_5m, write_1h = usage(engine, generation(engine, system=system))
    assert read == 0 and write_5m == 0 and write_1h > 64
    clock.now += 3000
    assert usage(engine, generation(engine, system=system)) == (fresh, write_1h, 0, 0)
    clock.now += 3601
    assert usage(engine, generation(engine, system=system))[3] == write_1h


def test_different_user_turns_share_the_cached_system_prompt(engine: LocalEngine) -> None:
    system = [{"type": "text", "text": SYSTEM + " Shared.", "cache_control": {"type": "ephemeral"}}]
    _, _, written, _ = usage(engine, generation(engine, system=system))
    other = [{"role": "user", "content": "And where does Emma go?"}]
    fresh, read, write_5m, _ = usage(engine, generation(engine, system=system, messages=other))
    assert read == written and write_5m == 0


def test_reuse_never_crosses_workspaces(engine: LocalEngine) -> None:
    system = [{"type": "text", "text": SYSTEM + " Private.", "cache_control": {"type": "ephemeral"}}]
    _, _, written, _ = usage(engine, generation(engine, "wrk_a", system=system))
    assert usage(engine, generation(engine, "wrk_a", system=system))[1] == written
    reused = metrics.PREFIX_TOKENS_REUSED.labels(model="m")
    before = reused._value.get()
    other = usage(engine, generation(engine, "wrk_b", system=system))
    assert other[1] == 0 and other[2] == written  # a miss and a write of its own
    assert reused._value.get() == before  # and no KV of workspace a was reused, not even implicitly
    again = usage(engine, generation(engine, "wrk_b", system=system))
    assert again[1] == written and reused._value.get() > before


def test_short_prefixes_are_not_cached(engine: LocalEngine) -> None:
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    assert usage(engine, generation(engine, system=system))[1:] == (0, 0, 0)
    assert usage(engine, generation(engine, system=system))[1:] == (0, 0, 0)


def test_automatic_caching_marks_the_last_block(engine: LocalEngine) -> None:
    messages = [{"role": "user", "content": SYSTEM + " Automatic. Where does Dune go?"}]
    total = asyncio.run(engine.count_tokens(generation(engine, messages=messages)))
    fresh, read, write_5m, _ = usage(engine, generation(engine, messages=messages, cache_control={"type": "ephemeral"}))
    assert read == 0 and fresh + write_5m == total and fresh < 10  # only the generation prompt follows
    assert usage(engine, generation(engine, messages=messages, cache_control={"type": "ephemeral"}))[1] == write_5m
    assert usage(engine, generation(engine, messages=messages))[1:] == (0, 0, 0)  # no cache_control, no caching


def test_lookback_finds_an_earlier_breakpoint(engine: LocalEngine) -> None:
    """A conversation grows; its new breakpoint is further on, and the old one is found by looking back."""
    turn1 = [{"role": "user", "content": [{"type": "text", "text": SYSTEM + " Look back.", "cache_control": {"type": "ephemeral"}}]}]
    _, _, written, _ = usage(engine, generation(engine, messages=turn1))
    turn2 = [
        {"role": "user", "content": [{"type": "text", "text": SYSTEM + " Look back."}]},
        {"role": "assistant", "content": "On the third shelf."},
        {"role": "user", "content": [{"type": "text", "text": "And Emma?", "cache_control": {"type": "ephemeral"}}]},
    ]
    fresh, read, write_5m, _ = usage(engine, generation(engine, messages=turn2))
    assert read == written and write_5m > 0


def test_cache_hit_output_equals_uncached_output(engine: LocalEngine) -> None:
    system = [{"type": "text", "text": SYSTEM + " Same.", "cache_control": {"type": "ephemeral"}}]
    body = {"max_tokens": 24, "system": system}

    def text(events: list[Event]) -> str:
        return "".join(getattr(e, "text", "") for e in events)

    first = text(run(engine, generation(engine, **body)))
    hit = run(engine, generation(engine, **body))
    assert isinstance(hit[0], Started) and hit[0].usage.cache_read_input_tokens > 0
    assert text(hit) == first


NOTES = "You keep notes. " + "".join(
    f"Note {i}: the crate {i * 7} arrives on day {i % 28 + 1} at dock {i % 5}. " for i in range(1, 60)
)


def test_a_long_cached_system_prompt_answers_the_same_as_a_cold_one(engine: LocalEngine) -> None:
    """A ~1.3k-token system block with a breakpoint, greedy. The request that writes the cache, the same
    request again (it reads the cache, and its slot still holds the whole prompt), and requests with other
    user turns (they read the cache, and share part of the user turn with the slot) answer as they do
    computed from scratch (each in a workspace of its own: no entry, no resident prefix)."""
    system = [{"type": "text", "text": NOTES, "cache_control": {"type": "ephemeral"}}]
    questions = ["What is the note to note 3?", "Which crates go to dock 2?", "What is note 12 about?"]

    def answer(workspace: str, question: str) -> tuple[str, int]:
        messages = [{"role": "user", "content": question}]
        events = run(engine, generation(engine, workspace, max_tokens=16, system=system, messages=messages))
        assert isinstance(events[0], Started)
        return "".join(getattr(e, "text", "") for e in events), events[0].usage.cache_read_input_tokens

    assert 1200 < asyncio.run(engine.count_tokens(generation(engine, system=system))) < 1500
    warm = [(answer("wrk_notes", question), answer("wrk_notes", question)) for question in questions]
    cold = [warm[0][0], *(answer(f"wrk_cold_{i}", question) for i, question in enumerate(questions[1:]))]
    read = warm[0][1][1]
    assert read > 1200 and all(r == read for pair in warm[1:] for _, r in pair)
    assert all(r == 0 for _, r in cold)  # the first request of wrk_notes is computed from scratch too
    assert [(first, again) for (first, _), (again, _) in warm] == [(text, text) for text, _ in cold]


def test_overload_sheds_with_529(engine: LocalEngine) -> None:
    """2 sequences and a queue of 1: the 4th concurrent request is refused at once; waiting is bounded."""

    async def scenario() -> list[Any]:
        async def one(max_tokens: int) -> Any:
            gen = generation(engine, max_tokens=max_tokens, messages=COUNTING)  # runs to max_tokens
            try:
                return [e async for e in (await engine.prepare(gen)).generate()]
            except ApiError as exc:
                return exc

        long = [asyncio.create_task(one(400)) for _ in range(2)]
        await asyncio.sleep(0.3)
        queued = asyncio.create_task(one(2))
        await asyncio.sleep(0.05)
        refused = await one(2)
        results = [refused, await queued, *[await task for task in long]]
        return results

    refused, queued, *long = asyncio.run(scenario())
    assert isinstance(refused, ApiError) and refused.status == 529 and refused.error_type == "overloaded_error"
    assert refused.headers.get("retry-after")
    # the queued one waited past max_queue_wait (1 s) behind two 400-token generations: shed too
    assert isinstance(queued, ApiError) and queued.status == 529
    assert all(isinstance(events, list) and isinstance(events[-1], Finished) for events in long), long


@pytest.mark.parametrize(
    ("breakpoints", "hit", "expected"),
    [
        ([(100, "5m")], 0, (0, 0, 100, 20)),
        ([(100, "5m")], 100, (100, 0, 0, 20)),
        ([(50, "1h"), (100, "5m")], 0, (0, 50, 50, 20)),
        ([(50, "1h"), (100, "5m")], 50, (50, 0, 50, 20)),
        ([(50, "1h"), (100, "1h")], 50, (50, 50, 0, 20)),
        ([(30, "5m")], 0, (0, 0, 0, 120)),  # below the minimum: not cached at all
    ],
)
def test_plan_accounting(breakpoints: list, hit: int, expected: tuple[int, int, int, int]) -> None:
    p = plan(120, breakpoints, hit, lambda position: position >= 40)
    assert (p.read, p.write_1h, p.write_5m, p.input) == expected
    assert p.read + p.write_1h + p.write_5m + p.input == 120


def test_chunk_ends_depend_on_the_prompt_alone() -> None:
    plain = Prompt(list(range(600)), [100, 300, 590], [])
    assert chunk_ends(plain, 256) == [256, 512, 600]
    marked = Prompt(list(range(600)), [100, 300, 590], [(300, "5m")])
    assert chunk_ends(marked, 256) == [100, 256, 300, 512, 600]  # with breakpoints, each block boundary up to the last


SHAPES = PassShapes(LocalEngineSettings(kv_cache_type="f16"))  # flash attention, f16 cache: kinds by the pass's size
STRICT = PassShapes(LocalEngineSettings(flash_attention=False))  # a kind is the pass itself


def test_a_prefix_is_reused_where_it_was_computed_as_the_prompts_own_chunks_compute_it() -> None:
    tokens = list(range(600))
    ends = [100, 256, 300, 512, 590, 600]
    target = SHAPES.plan(ends)
    kinds = [k if isinstance(k, str) else k[0] for k in target.kinds]
    assert kinds == ["tiled", "tiled", "rows", "tiled", "tiled", "rows"]
    assert reusable(tokens, SHAPES.plan(ends), tokens, target) == 598  # all there: its last 2 tokens are computed again
    # computed without the block ends: [0, 256) is tiled as the prompt's [0, 100) and [100, 256) are; [256, 300)
    # is a short pass of the prompt's (per-row), not tiled as [256, 512) was
    assert reusable(tokens, SHAPES.plan([256, 512, 600]), tokens, target) == 256
    # a prompt, then 2 decoded tokens: decoded tokens are never another prompt's
    held = SHAPES.plan([100, 256, 300, 310])
    held.add(311, decoded(310))
    held.add(312, decoded(311))
    assert reusable(tokens[:310] + [7, 7], held, tokens, target) == 300
    # a different tail from 450, inside the prompt's tiled chunk [300, 512): the rest of it, from 448, is
    # 64 tokens, still a tiled pass
    assert reusable(tokens[:450] + [9] * 150, SHAPES.plan(ends), tokens, target) == 448
    # a short prompt (one per-row chunk) keeps all but its last two tokens' worth of what it shares
    assert reusable(list(range(30)) + [9] * 20, SHAPES.plan([50]), list(range(45)), SHAPES.plan([45])) == 30
    assert reusable(list(range(45)), SHAPES.plan([45]), list(range(45)), SHAPES.plan([45])) == 43
    assert reusable([], SHAPES.plan([]), tokens, target) == 0


def test_a_pass_cut_short_keeps_its_kind() -> None:
    tokens = list(range(600))
    ends = [100, 256, 300, 512, 590, 600]
    cut = SHAPES.plan(ends)
    cut.truncate(448)
    assert cut.ends == [100, 256, 300, 448] and cut.kinds[-1] == "tiled"
    assert reusable(tokens[:448], cut, tokens, SHAPES.plan(ends)) == 448
    # a prompt whose chunk ends at 340 computes [300, 340) per row, not tiled as the slot did
    assert reusable(tokens[:448], cut, tokens, SHAPES.plan([100, 256, 300, 340, 600])) == 300


def test_without_flash_attention_a_prefix_is_reused_only_where_the_same_passes_ended() -> None:
    tokens = list(range(600))
    ends = [100, 256, 300, 512, 590, 600]
    assert reusable(tokens, STRICT.plan(ends), tokens, STRICT.plan(ends)) == 590
    assert reusable(tokens, STRICT.plan([256, 512, 600]), tokens, STRICT.plan(ends)) == 0
    assert reusable(tokens[:450] + [9] * 150, STRICT.plan(ends), tokens, STRICT.plan(ends)) == 300
    assert reusable(list(range(30)) + [9] * 20, STRICT.plan([50]), list(range(45)), STRICT.plan([45])) == 0


def test_a_resume_reuses_its_own_decoded_tokens_up_to_a_pass_end() -> None:
    held = SHAPES.plan([256, 300])
    for position in range(300, 310):
        held.add(position + 1, decoded(position))
    kv = list(range(310))
    assert reusable(kv, held, [*kv, 5], held.copy(), mid_pass=False) == 310
    other = SHAPES.plan([256, 310])  # another slot that prefilled those tokens: only the prompt's part is alike
    assert reusable(kv, other, [*kv, 5], held, mid_pass=False) == 300


def output_text(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta) and e.text)


@pytest.mark.parametrize("length", ["short", "long"])
def test_a_prefix_reused_from_the_last_request_changes_no_token(engine: LocalEngine, length: str) -> None:
    """The second prompt shares all but its question with the first one, which the slot still holds: it is
    reused up to inside the prompt's last chunk (one short per-row chunk, or a tiled one of a long prompt),
    and the answer is the same, token for token, as the same request computed from nothing (in a workspace
    whose slots hold nothing of it)."""
    lead = "Tell me about the shelving rules. " if length == "short" else SYSTEM
    first = [{"role": "user", "content": lead + "Where does Dune go?"}]
    second = [{"role": "user", "content": lead + "Where does Emma go?"}]
    reused = metrics.PREFIX_TOKENS_REUSED.labels(model="m")
    run(engine, generation(engine, "wrk_reuse", messages=first, max_tokens=1))
    before = reused._value.get()
    warm = run(engine, generation(engine, "wrk_reuse", messages=second, max_tokens=48))
    kept = reused._value.get() - before
    assert kept > (10 if length == "short" else 256), kept  # past the template's own prefix, or the first chunk
    cold = run(engine, generation(engine, f"wrk_cold_{length}", messages=second, max_tokens=48))
    assert output_text(warm) == output_text(cold) and output_text(warm)


def test_claude_code_billing_stamp_does_not_defeat_caching(engine: LocalEngine) -> None:
    def system(stamp: str) -> list[dict]:
        return [
            {"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.70.{stamp}; cc_entrypoint=cli; cch={stamp}1;"},
            {"type": "text", "text": SYSTEM + " Claude Code.", "cache_control": {"type": "ephemeral"}},
        ]

    _, _, written, _ = usage(engine, generation(engine, system=system("a1f")))
    assert usage(engine, generation(engine, system=system("9c2")))[1] == written
