"""The embedded engine in a process of its own, as vLLM keeps its engine core apart from its API server.

A native crash in llama.cpp (a segfault, an abort) then ends the engine process, not Missive: the
requests in flight end cleanly (before their first event, as `EngineUnavailable`, which the pipeline
falls back from or renders as a 529 the SDKs retry; after it, as an error inside the stream), the
ledger settles them as failed, and the engine restarts by itself while the rest of the API keeps
answering. The step loop also no longer shares a GIL with HTTP.

The two processes talk over two pipes, one each way, in messages that are plain tuples of picklable values:

    API -> engine   ("count" | "prepare", rid, Generation)  ("generate", rid, prepared rid)
                    ("cancel", rid)  ("metrics", rid)
    engine -> API   ("ready",)  ("result", rid, value)  ("event", rid, Event)
                    ("error", rid, status, message, headers, unavailable)
                    ("batch", [message, ...])   several of the above, in order

API -> engine messages go by `Connection.send`; engine -> API messages in frames.py's framing, read on
the API process's event loop. A generation's events are written to their pipe by the scheduler's
thread itself, a step's events for every stream as one "batch", so that a step wakes the API process's
loop once and no other thread; results (counts, prepared prompts) leave the engine process's event
loop in the same way, what one turn of it produced together. The directions have a pipe each because
the loop that reads one makes it non-blocking, which a blocking `Connection.send` of a large request on
the same pipe would not survive.

A prepared prompt waits in the engine process for its `generate` for `PREPARED_TTL` seconds (a
request refused at admission never sends one).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from missive import metrics
from missive.engines.base import EngineUnavailable, Generation
from missive.engines.local import frames
from missive.engines.local.relay import Relay
from missive.settings import LocalEngineSettings, ModelSettings
from missive.wire.errors import ApiError
from missive.wire.events import Event, Finished, Started
from missive.wire.models import ModelCard

if TYPE_CHECKING:
    from missive.engines.local.scheduler import Job

log = logging.getLogger("missive.engine")
PREPARED_TTL = 120.0
START_TIMEOUT = 300.0
READ_BYTES = 1 << 16


def _restarting() -> EngineUnavailable:
    return EngineUnavailable(529, "Overloaded: the engine is restarting", headers={"retry-after": "2"})


def _error_message(rid: int, error: BaseException) -> tuple[Any, ...]:
    if isinstance(error, ApiError):
        return ("error", rid, error.status, error.message, error.headers, isinstance(error, EngineUnavailable))
    return ("error", rid, 500, "Internal server error", {}, False)


def _rebuild(status: int, message: str, headers: dict[str, str], unavailable: bool) -> ApiError:
    return (EngineUnavailable if unavailable else ApiError)(status, message, headers=headers)


class ProcessEngine:
    """The embedded engine's API side: the `Engine` protocol, served by a child process it restarts."""

    signs_thinking = False
    fetches_urls = False

    def __init__(self, models: list[ModelSettings], settings: LocalEngineSettings, log_level: str = "info") -> None:
        from missive.engines.local.engine import LocalEngine

        self.name = "local"
        self._configs, self._settings, self._log_level = models, settings, log_level
        self._cards = LocalEngine(models, settings).models()  # from the settings alone: nothing loads here
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[tuple[Any, ...]]] = {}
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._ready: asyncio.Event | None = None
        self._closing = False
        self.restarts = 0

    def models(self) -> list[ModelCard]:
        return self._cards

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._spawn()

    async def _spawn(self) -> None:
        self._ready = asyncio.Event()
        context = multiprocessing.get_context("spawn")
        their_commands, commands = context.Pipe(duplex=False)
        events, their_events = context.Pipe(duplex=False)  # its own pipe: the loop makes it non-blocking
        process = context.Process(
            target=_child_main,
            args=(self._configs, self._settings, self._log_level, their_commands, their_events),
            name="missive-engine",
            daemon=True,
        )
        process.start()
        their_commands.close()
        their_events.close()
        self._conn, self._process = commands, process
        self._loop.add_reader(events.fileno(), self._readable, events, process, frames.Reader())
        started = time.monotonic()
        await asyncio.wait_for(self._ready.wait(), START_TIMEOUT)
        log.info("engine process %d ready in %.1f s", process.pid, time.monotonic() - started)

    def _readable(
        self, events: Connection, process: multiprocessing.process.BaseProcess, reader: frames.Reader
    ) -> None:
        """The pipe has bytes (event loop): dispatch the messages they complete; at EOF the process is gone."""
        try:
            data = os.read(events.fileno(), READ_BYTES)
        except BlockingIOError:  # woken for nothing
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(events.fileno())
            events.close()
            self._loop.create_task(self._reap(process))
            return
        for message in reader.feed(data):
            for each in message[1] if message[0] == "batch" else (message,):
                self._dispatch(each)

    async def _reap(self, process: multiprocessing.process.BaseProcess) -> None:
        await asyncio.to_thread(process.join, 5)
        self._died(process.exitcode)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            assert self._ready is not None
            self._ready.set()
        elif kind in ("result", "error") and message[1] in self._pending:
            future = self._pending.pop(message[1])
            if not future.done():
                if kind == "result":
                    future.set_result(message[2])
                else:
                    future.set_exception(_rebuild(*message[2:]))
        elif message[1] in self._streams:
            self._streams[message[1]].put_nowait(message)

    def _died(self, exitcode: int | None) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(_restarting())
        self._pending.clear()
        for queue in self._streams.values():
            queue.put_nowait(("died", exitcode))
        if self._closing:
            return
        self.restarts += 1
        log.error("engine process exited (code %s); restarting it", exitcode)
        self._conn = None
        self._loop.create_task(self._respawn())

    async def _respawn(self) -> None:
        try:
            await self._spawn()
        except Exception:
            log.exception("the engine process could not be restarted")

    def _send(self, *message: Any) -> None:
        if self._conn is None or self._ready is None or not self._ready.is_set():
            raise _restarting()
        try:
            self._conn.send(message)
        except (OSError, ValueError):
            raise _restarting() from None

    async def _call(self, kind: str, *args: Any) -> Any:
        rid = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = future
        try:
            self._send(kind, rid, *args)
            return await future
        finally:
            self._pending.pop(rid, None)

    async def close(self) -> None:
        self._closing = True
        if self._conn is not None:
            try:
                self._conn.send(("stop",))
            except OSError:
                pass
        if self._process is not None:
            await asyncio.to_thread(self._process.join, 10)
            if self._process.is_alive():
                self._process.kill()

    async def count_tokens(self, generation: Generation) -> int:
        return int(await self._call("count", generation))

    async def prepare(self, generation: Generation) -> ProcessPrepared:
        rid = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = future
        try:
            self._send("prepare", rid, generation)
            input_tokens = await future
        finally:
            self._pending.pop(rid, None)
        return ProcessPrepared(self, rid, int(input_tokens), self._process)

    async def metrics_text(self) -> bytes:
        """The engine process's metrics, in Prometheus' text format (empty while it restarts)."""
        try:
            return bytes(await asyncio.wait_for(self._call("metrics"), 2))
        except (ApiError, TimeoutError):
            return b""


class ProcessPrepared:
    def __init__(
        self, engine: ProcessEngine, rid: int, input_tokens: int, process: multiprocessing.process.BaseProcess | None
    ) -> None:
        self.engine, self.rid, self.input_tokens = engine, rid, input_tokens
        self.process = process  # the engine process that holds the prepared request

    async def generate(self) -> AsyncIterator[Event]:
        engine = self.engine
        rid = next(engine._ids)
        queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        engine._streams[rid] = queue
        started = False
        try:
            if engine._process is not self.process:  # prepared by a process that has died since
                raise _restarting()
            engine._send("generate", rid, self.rid)
            while True:
                message = await queue.get()
                if message[0] == "event":
                    event = message[2]
                    started = started or isinstance(event, Started)
                    yield event
                    if isinstance(event, Finished):
                        return
                elif message[0] == "error":
                    raise _rebuild(*message[2:])
                elif message[0] == "died":
                    if not started:
                        raise _restarting()
                    raise ApiError(500, "Internal server error: the engine process stopped mid-generation")
        finally:
            engine._streams.pop(rid, None)
            if engine._conn is not None:
                try:
                    engine._send("cancel", rid)
                except ApiError:
                    pass


# --- the engine process ----------------------------------------------------------------------------


def _child_main(
    models: list[ModelSettings],
    settings: LocalEngineSettings,
    log_level: str,
    commands: Connection,
    events: Connection,
) -> None:
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    asyncio.run(_Child(models, settings, commands, events).run())


class _Child:
    def __init__(
        self, models: list[ModelSettings], settings: LocalEngineSettings, commands: Connection, events: Connection
    ) -> None:
        from missive.engines.local.engine import LocalEngine

        self.engine = LocalEngine(models, settings)
        self.conn, self.events = commands, events
        self.prepared: dict[int, tuple[float, Any]] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.jobs: dict[int, Job] = {}  # generations on a scheduler, until the API process cancels them
        self.stopped = asyncio.Event()
        self.outbox: list[tuple[Any, ...]] = []  # sent at the end of the loop's turn, as one message
        self.relay = Relay(self._send_step)  # what the schedulers emit, written after each step
        self.writing = threading.Lock()  # the loop's thread and the schedulers' threads write to the pipe

    async def run(self) -> None:
        await self.engine.start()
        for scheduler in self.engine.schedulers.values():
            scheduler.flushes.append(self.relay.flush)
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, args=(loop,), daemon=True).start()
        self._send([("ready",)])
        await self.stopped.wait()
        await self.engine.close()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):  # the API process is gone
                message = ("stop",)
            loop.call_soon_threadsafe(self._handle, message)
            if message[0] == "stop":
                return

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "stop":
            self.stopped.set()
        elif kind == "cancel":
            task = self.tasks.pop(message[1], None)
            if task is not None:
                task.cancel()
            job = self.jobs.pop(message[1], None)
            if job is not None:
                job.cancelled.set()
        else:
            self.tasks[message[1]] = asyncio.get_running_loop().create_task(self._serve(*message))

    def _post(self, message: tuple[Any, ...]) -> None:
        """Queue a message for the API process; what this turn of the loop queues leaves together."""
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self._send_outbox)
        self.outbox.append(message)

    def _send_outbox(self) -> None:
        messages, self.outbox = self.outbox, []
        self._send(messages)

    def _send_step(self, batch: list[tuple[int, Event | BaseException]]) -> None:
        """After each scheduler step (its thread): what it emitted, for every stream, as one message."""
        messages = []
        for rid, item in batch:
            if isinstance(item, BaseException) and not isinstance(item, ApiError):
                log.error("engine request failed", exc_info=item)
            messages.append(_error_message(rid, item) if isinstance(item, BaseException) else ("event", rid, item))
        self._send(messages)

    def _send(self, messages: list[tuple[Any, ...]]) -> None:
        """Write messages to the API process, together (any thread)."""
        try:
            data = frames.encode(messages[0] if len(messages) == 1 else ("batch", messages))
        except Exception:  # a value that does not pickle: the others go one by one
            log.exception("an engine message could not be sent")
            data = b"".join(_encode_each(messages))
        with self.writing:
            try:
                frames.write(self.events.fileno(), data)
            except OSError:  # the API process is gone; the reader thread stops the engine
                pass

    async def _serve(self, kind: str, rid: int, *args: Any) -> None:
        try:
            if kind == "count":
                self._post(("result", rid, await self.engine.count_tokens(args[0])))
            elif kind == "prepare":
                now = time.monotonic()
                for stale in [key for key, (at, _) in self.prepared.items() if now - at > PREPARED_TTL]:
                    del self.prepared[stale]
                prepared = await self.engine.prepare(args[0])
                self.prepared[rid] = (now, prepared)
                self._post(("result", rid, prepared.input_tokens))
            elif kind == "generate":
                if args[0] not in self.prepared:  # dropped after PREPARED_TTL
                    raise EngineUnavailable(529, "Overloaded: the request waited too long after its prompt was counted")
                _, prepared = self.prepared.pop(args[0])
                self.jobs[rid] = prepared.submit(self.relay.sender(rid))
            elif kind == "metrics":
                from prometheus_client import generate_latest

                self._post(("result", rid, generate_latest(metrics.ENGINE_REGISTRY)))
        except asyncio.CancelledError:
            pass
        except BaseException as error:
            if not isinstance(error, ApiError):
                log.exception("engine request failed")
            try:
                self._post(_error_message(rid, error))
            except OSError:
                pass
        finally:
            self.tasks.pop(rid, None)


def _encode_each(messages: list[tuple[Any, ...]]) -> Iterator[bytes]:
    for message in messages:
        try:
            yield frames.encode(message)
        except Exception:  # its stream ends with an error rather than waiting forever
            if len(message) > 1 and isinstance(message[1], int):
                yield frames.encode(_error_message(message[1], RuntimeError(message[0])))
