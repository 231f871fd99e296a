"""The embedded engine: llama.cpp models in this process, each with one worker thread.

For now each model decodes one sequence at a time, in arrival order; the worker thread owns the
llama.cpp context, so nothing else touches it. Requests hand their `Job` to the worker and read
events back through an asyncio queue; closing the event iterator (a client that went away) sets the
job's cancel flag, which the worker checks before each forward pass.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator

import anyio.to_thread

from missive.engines.base import Capabilities, Event, Finished, Generation, ModelCard, Started, Usage
from missive.engines.local.model import Job, LocalModel, Sampling
from missive.engines.prompt import check_input_support, to_chat
from missive.settings import LocalEngineSettings, ModelSettings
from missive.wire import requests as rq
from missive.wire.errors import invalid

log = logging.getLogger("missive.engine")


class LocalEngine:
    def __init__(self, models: list[ModelSettings], settings: LocalEngineSettings) -> None:
        self._configs = models
        self._settings = settings
        self._models: dict[str, LocalModel] = {}
        self._jobs: dict[str, queue.Queue[Job | None]] = {}
        self._threads: list[threading.Thread] = []

    def models(self) -> list[ModelCard]:
        return [
            ModelCard(
                id=config.id,
                display_name=config.display_name or config.id,
                context_window=config.context_window,
                max_output_tokens=config.max_output_tokens,
                capabilities=Capabilities(),
            )
            for config in self._configs
        ]

    async def start(self) -> None:
        for config in self._configs:
            model = await anyio.to_thread.run_sync(LocalModel, config, self._settings)
            jobs: queue.Queue[Job | None] = queue.Queue()
            thread = threading.Thread(target=_work, args=(model, jobs), name=f"engine-{config.id}", daemon=True)
            thread.start()
            self._models[config.id], self._jobs[config.id] = model, jobs
            self._threads.append(thread)

    async def close(self) -> None:
        for jobs in self._jobs.values():
            jobs.put(None)
        for thread in self._threads:
            await anyio.to_thread.run_sync(thread.join, 10)

    def _prompt_tokens(self, generation: Generation) -> list[int]:
        check_input_support(generation.params, generation.model)
        model = self._models[generation.model.id]
        tokens = model.tokenize(model.render(to_chat(generation)))
        limit = generation.model.context_window
        if len(tokens) > limit:
            raise invalid(f"prompt is too long: {len(tokens)} tokens > {limit} maximum")
        return tokens

    async def count_tokens(self, generation: Generation) -> int:
        return len(self._prompt_tokens(generation))

    async def generate(self, generation: Generation) -> AsyncIterator[Event]:
        params = generation.params
        assert isinstance(params, rq.MessageCreateParams)
        tokens = self._prompt_tokens(generation)
        yield Started(Usage(input_tokens=len(tokens)))
        if params.max_tokens == 0:
            yield Finished("max_tokens", Usage(input_tokens=len(tokens)))
            return

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        job = Job(
            tokens=tokens,
            max_tokens=params.max_tokens,
            sampling=Sampling(
                temperature=1.0 if params.temperature is None else params.temperature,
                top_p=1.0 if params.top_p is None else params.top_p,
                top_k=params.top_k or 0,
            ),
            stops=params.stop_sequences or [],
            emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
        )
        self._jobs[generation.model.id].put(job)
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


def _work(model: LocalModel, jobs: queue.Queue[Job | None]) -> None:
    while (job := jobs.get()) is not None:
        if job.cancelled.is_set():
            continue
        try:
            model.run(job)
        except Exception as exc:  # reported to the request that caused it; the worker lives on
            log.exception("generation failed")
            job.emit(exc)
            model.llm.reset()
