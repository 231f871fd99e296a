"""One request through Missive, without HTTP: validate -> resolve -> admit -> generate -> settle.

    validate   the request's own rules (version, betas, roles, tools, signatures), off the event loop
    resolve    the model id -> a route: its engines in order of preference (registry)
    media      url and file sources made inline, images and PDFs checked, for each engine (media/sources.py)
    prepare    the engine renders and counts the prompt; a prompt too long is refused here
    admit      spend, credit, RPM, and ITPM charged on the counted prompt (policy): before any slot
    generate   the engine takes a slot (or an upstream answers); an engine that cannot serve before
               its first event passes the request to the route's next target (fallback)
    settle     the ledger record and the buckets, once, however the generation ends (admission)

The HTTP routes call `create` and `count_tokens`, then render the `Reply` as SSE or one Message; the
batch worker (batches/worker.py) calls `create` too, with `Call.batch`. Thinking blocks are signed here for the engines that do not sign
their own (`Engine.signs_thinking`), and the signatures sent back are checked here for those same
engines: an upstream that signs checks its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread

from missive import metrics
from missive.engines.base import Engine, EngineUnavailable, Generation, Prepared
from missive.engines.registry import Registry, Resolved, Route
from missive.gateway.admission import Admission
from missive.gateway.auth import Principal
from missive.gateway.policy import Policy
from missive.media.fetch import Fetcher
from missive.media.sources import Media, RequestMedia
from missive.settings import MediaSettings
from missive.wire import requests as rq
from missive.wire import validate
from missive.wire.betas import Betas
from missive.wire.errors import ApiError, invalid
from missive.wire.events import BlockStart, BlockStop, Delta, Event, Started
from missive.wire.ids import new_id
from missive.wire.messages import MessageBuilder
from missive.wire.signatures import sign_thinking

log = logging.getLogger("missive.messages")
INLINE_CHECK_BYTES = 16 * 1024  # bodies up to this size are checked on the event loop


@dataclass(frozen=True)
class Call:
    """Who is calling and how: what the transport read before the body."""

    principal: Principal
    version: str
    betas: Betas
    request_id: str
    batch: bool = False  # a request of a message batch: billed as a batch, and yields to interactive ones


Params = TypeVar("Params", rq.MessageCreateParams, rq.CountTokensParams)


@dataclass
class Reply:
    """An admitted generation whose engine has started: its first event, and the rest to come."""

    stream: bool
    builder: MessageBuilder
    first: Started
    events: AsyncIterator[Event]  # tracked: settles when exhausted or closed
    admission: Admission

    @property
    def headers(self) -> dict[str, str]:
        """Rate-limit headers: as of admission, and as of settlement once the events are done."""
        return self.admission.headers


@dataclass(frozen=True)
class _Checked:
    route: Route
    messages: list[rq.MessageParam]
    media: RequestMedia


class Pipeline:
    def __init__(self, registry: Registry, policy: Policy, thinking_key: bytes, media: Media | None = None) -> None:
        self.registry = registry
        self.policy = policy
        self.thinking_key = thinking_key
        self.media = media or Media(MediaSettings(), Fetcher(MediaSettings()), files=None)

    async def create(self, call: Call, body: bytes) -> Reply:
        """Run a `/v1/messages` body (JSON) up to its engine's first event; raises `ApiError` if refused."""
        route: Route | None = None
        try:
            params, checked = await self._checked(call, body, rq.MessageCreateParams)
            route = checked.route
            return await self._run(call, params, checked)
        except ApiError as error:  # rate-limit headers on every response, errors included
            await self.policy.add_rate_headers(error, call.principal, route.id if route else None)
            raise

    async def count_tokens(self, call: Call, body: bytes) -> tuple[int, dict[str, str]]:
        """The prompt's `input_tokens` as the route's first available engine counts it, and the headers."""
        try:
            headers = await self.policy.admit_count_tokens(call.principal)  # its own RPM
            params, checked = await self._checked(call, body, rq.CountTokensParams)
            unavailable: EngineUnavailable | None = None
            for target in self.registry.in_order(checked.route):
                self._check_signatures(target.engine, params)
                try:
                    generation = await self._generation(call, params, checked, target)
                    return await target.engine.count_tokens(generation), headers
                except EngineUnavailable as error:
                    unavailable = error
            assert unavailable is not None
            raise unavailable
        except ApiError as error:
            await self.policy.count_tokens_headers(error, call.principal)
            raise

    async def _checked(self, call: Call, body: bytes, kind: type[Params]) -> tuple[Params, _Checked]:
        """`_check`, in a worker thread for a large body: a large prompt takes a while to parse and check,
        and the event loop must keep serving meanwhile. A small one is checked in less time than the hop
        to a thread takes (a quarter of a millisecond on an idle machine, more on a busy one)."""
        if len(body) <= INLINE_CHECK_BYTES:
            return self._check(call, body, kind)
        return await anyio.to_thread.run_sync(self._check, call, body, kind)

    def _check(self, call: Call, body: bytes, kind: type[Params]) -> tuple[Params, _Checked]:
        """The body parsed, the request's own rules, and its route."""
        params = rq.parse_body(body, kind)
        validate.check_version_rules(params, call.version)
        validate.check_beta_fields(params, call.betas)
        validate.check_roles(params)
        validate.check_breakpoints(params)
        validate.check_tools(params)
        validate.check_tool_pairing(params.messages)  # the indexes the client sent, before turns are merged
        if isinstance(params, rq.MessageCreateParams):
            validate.check_generation(params)
        route = self.registry.resolve(params.model)
        if isinstance(params, rq.MessageCreateParams) and params.max_tokens > route.card.max_output_tokens:
            raise invalid(
                f"max_tokens: {params.max_tokens} > {route.card.max_output_tokens}, which is the maximum allowed "
                f"number of output tokens for {params.model}"
            )
        media = self.media.sources(params, call.principal.workspace_id)  # found here; resolved per engine
        return params, _Checked(route, validate.normalize(params), media)

    def _check_signatures(self, engine: Engine, params: rq.MessageCreateParams | rq.CountTokensParams) -> None:
        if not engine.signs_thinking:
            validate.check_thinking_signatures(params.messages, self.thinking_key)

    async def _generation(
        self, call: Call, params: rq.MessageCreateParams | rq.CountTokensParams, checked: _Checked, target: Resolved
    ) -> Generation:
        """The request as `target` sees it, its media made ready for that engine."""
        params, messages = await checked.media.resolve(target.engine, target.card, checked.messages)
        return Generation(
            target.card,
            params,
            messages,
            call.principal.workspace_id,
            version=call.version,
            betas=call.betas.sent,
            request_id=call.request_id,
            background=call.batch,
        )

    async def _run(self, call: Call, params: rq.MessageCreateParams, checked: _Checked) -> Reply:
        """Try the route's targets in order until one starts; admit before the first one is asked for a slot."""
        admission: Admission | None = None
        unavailable: EngineUnavailable | None = None
        try:
            for target in self.registry.in_order(checked.route):
                engine = target.engine
                self._check_signatures(engine, params)
                asked = time.monotonic()
                try:
                    prepared = await engine.prepare(await self._generation(call, params, checked, target))
                    if admission is None:
                        admission = await self.policy.admit(
                            call.principal,
                            checked.route.id,
                            params.model,
                            prepared.input_tokens,
                            params.max_tokens,
                            call.request_id,
                            service_tier="batch" if call.batch else "standard",
                        )
                    first, events = await _start(admission, target, prepared)
                except EngineUnavailable as error:
                    log.warning("%s engine %s unavailable: %s", call.request_id, engine.name, error.message)
                    self.registry.breakers[engine.name].failed()
                    metrics.ENGINE_REQUESTS.labels(engine=engine.name, outcome="unavailable").inc()
                    metrics.FALLBACKS.labels(engine=engine.name).inc()
                    unavailable = error
                    continue
                self.registry.breakers[engine.name].succeeded()
                metrics.ENGINE_FIRST_EVENT_SECONDS.labels(engine=engine.name).observe(time.monotonic() - asked)
                admission.started(first.usage)
                if not engine.signs_thinking:
                    events = _signed(events, self.thinking_key)
                builder = MessageBuilder(new_id("msg_"), params.model, admission.record.service_tier)
                log.info(
                    "%s %s model=%s engine=%s input_tokens=%d stream=%s",
                    call.request_id,
                    builder.message["id"],
                    params.model,
                    engine.name,
                    first.usage.input_tokens,
                    bool(params.stream),
                )
                return Reply(bool(params.stream), builder, first, admission.track(events), admission)
        except BaseException:
            if admission is not None:
                with anyio.CancelScope(shield=True):
                    await admission.release()
            raise
        assert unavailable is not None
        if admission is not None:
            await admission.release()
        raise unavailable


async def _start(
    admission: Admission, target: Resolved, prepared: Prepared
) -> tuple[Started, AsyncIterator[Event]]:
    """The engine's first event, while the record naming the engine is written: the commit overlaps the
    engine's work (a prompt's prefill, an upstream's first token) instead of following it. Both are done
    before this returns, that is before the first byte; if either fails, the other is finished first."""
    events = prepared.generate()
    opened = admission.open(target.engine.name, target.card.id)
    try:
        first = await anext(events)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await opened  # written before it is retargeted or removed; the store's error, if any, wins
        raise
    try:
        with anyio.CancelScope(shield=True):
            await opened
    except BaseException:
        with anyio.CancelScope(shield=True):
            await events.aclose()  # type: ignore[attr-defined]
        raise
    assert isinstance(first, Started)
    return first, events


async def _signed(events: AsyncIterator[Event], key: bytes) -> AsyncIterator[Event]:
    """Sign every thinking block: a `signature` delta just before its stop."""
    thinking: list[str] | None = None
    try:
        async for event in events:
            if isinstance(event, BlockStart):
                thinking = [] if event.kind == "thinking" else None
            elif isinstance(event, Delta) and event.kind == "thinking" and thinking is not None:
                thinking.append(event.text)
            elif isinstance(event, BlockStop) and thinking is not None:
                yield Delta("signature", sign_thinking(key, "".join(thinking)))
                thinking = None
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]
