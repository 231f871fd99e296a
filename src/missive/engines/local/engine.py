"""The embedded engine: llama.cpp models in this process, each served by a continuous-batching scheduler.

`prepare` renders and tokenizes a request in a worker thread (never on the event loop: a large prompt
takes seconds; the tokenizer only reads the vocabulary). Once admitted, `generate` hands it to the
model's scheduler thread as a `Job`; its events come back through an asyncio queue (`submit` hands
them to a callback instead, on the scheduler's thread: the engine process's pipe). Closing the event
iterator (a client that went away) sets the job's cancel flag, and the scheduler frees its sequence
at the next step. A background generation (batch work) yields its slot to interactive ones
(scheduler.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread

from missive.engines.base import Generation
from missive.engines.local import grammar
from missive.engines.local.model import LocalModel, Prompt, reasons
from missive.engines.local.relay import Relay
from missive.engines.local.sampling import Sampling
from missive.engines.local.scheduler import Job, Scheduler
from missive.engines.prompt import (
    HarmonySyntax,
    ToolFormat,
    check_input_support,
    single_call,
    to_chat,
    tool_specs,
)
from missive.settings import LocalEngineSettings, ModelSettings
from missive.wire import requests as rq
from missive.wire.errors import invalid
from missive.wire.events import Event, Finished
from missive.wire.models import Capabilities, ModelCard


class LocalEngine:
    signs_thinking = False
    fetches_urls = False

    def __init__(
        self,
        models: list[ModelSettings],
        settings: LocalEngineSettings,
        clock: Callable[[], float] = time.monotonic,
        name: str = "local",
    ) -> None:
        self.name = name
        self._configs = models
        self._settings = settings
        self._clock = clock
        self._models: dict[str, LocalModel] = {}
        self.schedulers: dict[str, Scheduler] = {}
        self._relays: dict[asyncio.AbstractEventLoop, Relay] = {}  # one per loop that awaits events

    def models(self) -> list[ModelCard]:
        return [
            ModelCard(
                id=config.id,
                display_name=config.display_name or config.id,
                context_window=config.context_window,
                max_output_tokens=config.max_output_tokens,
                capabilities=Capabilities(
                    tools=True, structured_outputs=True, thinking=reasons(config), image_input=bool(config.mmproj),
                    pdf_input=True,  # the text of each page (engines/prompt.py), and with a projector pictures of them
                ),
            )
            for config in self._configs
        ]

    async def start(self) -> None:
        for config in self._configs:
            model = await anyio.to_thread.run_sync(LocalModel, config, self._settings)
            scheduler = Scheduler(model, self._settings, self._clock)
            scheduler.flushes.append(self._flush)
            scheduler.start()
            self._models[config.id], self.schedulers[config.id] = model, scheduler

    def _flush(self) -> None:
        for relay in list(self._relays.values()):
            relay.flush()

    def relay(self, loop: asyncio.AbstractEventLoop) -> Relay:
        """The relay of `loop`: its events reach it once per scheduler step."""
        relay = self._relays.get(loop)
        if relay is None:
            for stale in [other for other in self._relays if other.is_closed()]:
                del self._relays[stale]
            relay = self._relays[loop] = Relay.to_loop(loop)
        return relay

    async def close(self) -> None:
        for scheduler in self.schedulers.values():
            await anyio.to_thread.run_sync(scheduler.stop)
        for model in self._models.values():
            model.close()

    def _prompt(self, generation: Generation, with_boundaries: bool) -> Prompt:
        check_input_support(generation.params, generation.model)
        model = self._models[generation.model.id]
        chat = to_chat(generation, model.calls)
        if generation.model.capabilities.thinking:  # open the thinking, or skip it when it is off
            chat.prefill = model.thinking_syntax.prefill(_thinking_on(generation.params), chat.prefill)
        prompt = model.prompt(chat, with_boundaries and any(chat.marks))
        limit = generation.model.context_window
        if len(prompt.tokens) > limit:
            raise invalid(f"prompt is too long: {len(prompt.tokens)} tokens > {limit} maximum")
        return prompt

    async def count_tokens(self, generation: Generation) -> int:
        prompt = await anyio.to_thread.run_sync(self._prompt, generation, False)
        return len(prompt.tokens)

    async def prepare(self, generation: Generation) -> LocalPrepared:
        prompt = await anyio.to_thread.run_sync(self._prompt, generation, True)
        return LocalPrepared(self, generation, prompt)


class LocalPrepared:
    def __init__(self, engine: LocalEngine, generation: Generation, prompt: Prompt) -> None:
        self.engine, self.generation, self.prompt = engine, generation, prompt

    @property
    def input_tokens(self) -> int:
        return len(self.prompt.tokens)

    async def generate(self) -> AsyncIterator[Event]:
        events: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        job = self.submit(self.engine.relay(asyncio.get_running_loop()).sender(events))
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            job.cancelled.set()

    def submit(self, emit: Callable[[Event | BaseException], None]) -> Job:
        """Hand the generation to its model's scheduler. `emit` is called on the scheduler's thread with
        each event, until a Finished or an exception; setting the job's `cancelled` stops it."""
        generation = self.generation
        params = generation.params
        assert isinstance(params, rq.MessageCreateParams)
        model = self.engine._models[generation.model.id]
        calls = model.calls
        temperature = params.temperature if params.temperature is not None else model.config.temperature
        job = Job(
            prompt=self.prompt,
            max_tokens=params.max_tokens,
            sampling=Sampling(
                temperature=1.0 if temperature is None else temperature,
                top_p=1.0 if params.top_p is None else params.top_p,
                top_k=params.top_k or 0,
            ),
            stops=params.stop_sequences or [],
            workspace=generation.workspace_id,
            thinking=generation.model.capabilities.thinking and _thinking_on(params),
            thinking_budget=params.thinking.budget_tokens if isinstance(params.thinking, rq.ThinkingEnabled) else None,
            show_thinking=getattr(params.thinking, "display", None) != "omitted",
            background=generation.background,
            **_constraints(params, calls),
            emit=emit,
        )
        self.engine.schedulers[generation.model.id].submit(job)
        return job


def _constraints(params: rq.MessageCreateParams, calls: ToolFormat) -> dict[str, Any]:
    """The grammar for this request's output, and the syntax of the tool calls to parse out of it.

    With tools (and tool_choice other than none) calls are parsed, and their inputs constrained:
    from the first token for `any` and `tool`, from the moment the model starts a call for `auto`.
    `tool` allows exactly one call, `disable_parallel_tool_use` at most one (`single_call`).
    Otherwise `output_config.format` constrains the whole text to its JSON schema.
    """
    choice = params.tool_choice
    specs = tool_specs(params)
    if specs and not isinstance(choice, rq.ToolChoiceNone):
        allowed = specs
        if isinstance(choice, rq.ToolChoiceTool):
            allowed = [spec for spec in specs if spec.name == choice.name]
        forced = isinstance(choice, (rq.ToolChoiceAny, rq.ToolChoiceTool))
        tool_grammar = grammar.tool_calls(allowed, forced, single_call(choice) or not calls.parallel, calls)
        return {"grammar": tool_grammar, "calls": calls, "tools": specs}
    # harmony's output is messages on channels, with or without tools: its parser always splits them
    channels = {"calls": calls, "tools": []} if isinstance(calls, HarmonySyntax) else {}
    if params.output_config is not None and params.output_config.format is not None:
        return {**channels, "grammar": grammar.json_output(params.output_config.format.schema_)}
    return channels


def _thinking_on(params: rq.MessageCreateParams | rq.CountTokensParams) -> bool:
    return isinstance(params.thinking, (rq.ThinkingEnabled, rq.ThinkingAdaptive))
