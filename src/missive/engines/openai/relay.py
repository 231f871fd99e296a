"""A chat-completions stream (SSE chunks) -> Missive's engine events, one chunk at a time, nothing buffered.

    the first chunk                 Started, its input usage estimated (the upstream reports usage last)
    delta.content                   a text block's deltas; with a forced tool, that tool's input_json
    delta.reasoning_content, delta.reasoning
                                    a thinking block's deltas, when the request has thinking on; left
                                    out otherwise (the Messages API shows no thinking it was not asked
                                    for); Missive signs the block (pipeline.py)
    delta.tool_calls                a tool_use block per call index, with input_json deltas; the id is the
                                    upstream's when it is a valid tool_use id, else a Missive `toolu_` id
    finish_reason                   the stop reason: stop -> end_turn (stop_sequence when a stop sequence
                                    matched), length -> max_tokens (model_context_window_exceeded when
                                    fewer tokens than max_tokens came: the window ended first),
                                    tool_calls -> tool_use, content_filter -> refusal, abort or
                                    error -> an error that ends the stream
    usage                           prompt_tokens - cached_tokens -> input_tokens, cached_tokens
                                    (prompt_tokens_details) -> cache_read_input_tokens, completion_tokens
                                    -> output_tokens, reasoning_tokens -> thinking_tokens
    [DONE]                          Finished
    {"error": ...}                  raises it (errors.from_chunk)

Which stop sequence matched is read where each server says it: llama-server's `__verbose.stopping_word`
(sent when the request asks for `verbose`), vLLM's `stop_reason` and SGLang's `matched_stop` in the
choice. A server that says none of these (Ollama, LM Studio) stops at the sequence but is reported as
end_turn. Blocks never interleave: a delta of another kind closes the open block. Tool calls come
one after another (by index) from every server known here; a call that resumes after the next began
cannot be carried and ends the stream with an error.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from missive.engines.openai import errors
from missive.engines.upstream import protocol_error
from missive.wire.events import BlockStart, BlockStop, Delta, Event, Finished, Started, StopReason, Usage
from missive.wire.ids import new_id

log = logging.getLogger("missive.engines.openai")

TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")  # what the Messages API accepts back as a tool_use id


@dataclass
class _Call:
    id: str | None
    name: str | None
    pending: list[str] = field(default_factory=list)  # arguments that came before the call's name
    opened: bool = False
    closed: bool = False


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class Relay:
    """The translation of one upstream stream. `feed` takes each parsed chunk and returns Missive's events."""

    engine: str
    request_id: str = ""
    estimated_input: int = 0  # the input tokens reported until (or unless) the upstream reports usage
    max_tokens: int = 1  # the client's; 0 (warming a cache) shows no content
    stop_sequences: tuple[str, ...] = ()
    thinking: bool = False  # reasoning becomes thinking blocks
    thinking_text: bool = True  # display "omitted": the block keeps its signature, not its text
    forced_tool: str | None = None  # the content is this tool's input (request.forced_tool)
    started: bool = False
    finished: bool = False
    finish_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage | None = None  # as the upstream reported it
    pieces: int = 0  # deltas received: the output tokens' stand-in if the upstream reports no usage
    tool_used: bool = False
    _open: str | None = None  # "text", "thinking", "tool_use" or None
    _calls: dict[int, _Call] = field(default_factory=dict)
    _open_call: int | None = None

    def feed(self, chunk: Any) -> list[Event]:
        if errors.is_error(chunk):
            raise errors.from_chunk(chunk, self.started)
        if not isinstance(chunk, dict):
            return []
        events: list[Event] = []
        if not self.started:
            self.started = True
            events.append(Started(Usage(input_tokens=self.estimated_input)))
        if isinstance(chunk.get("usage"), dict):
            self._take_usage(chunk["usage"])
        verbose = chunk.get("__verbose")  # llama-server, asked for stop_type and stopping_word
        if isinstance(verbose, dict) and verbose.get("stop_type") == "word":
            self._matched(verbose.get("stopping_word"))
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                events += self._choice(choice)
        return events

    @property
    def complete(self) -> bool:
        """Whether the upstream said how the message ended (its finish_reason came)."""
        return self.finish_reason is not None

    def finish(self) -> list[Event]:
        """The stream's end: close a block left open, and the Finished event."""
        if self.finish_reason in ("abort", "error"):  # SGLang, TGI: the generation failed upstream
            raise protocol_error(f"Engine {self.engine}: the upstream ended the generation with {self.finish_reason!r}.")
        events = self._close()
        self.finished = True
        usage = self.usage
        if usage is None:
            log.warning(
                "%s engine %s: the upstream reported no usage; input estimated at %d, output counted as %d deltas",
                self.request_id,
                self.engine,
                self.estimated_input,
                self.pieces,
            )
            usage = Usage(input_tokens=self.estimated_input, output_tokens=self.pieces)
        stop = self._stop_reason(usage)
        return [*events, Finished(stop, usage, self.stop_sequence if stop == "stop_sequence" else None)]

    # --- one choice ---------------------------------------------------------------------------

    def _choice(self, choice: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events += self._piece("thinking", reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            events += self._piece("tool_use" if self.forced_tool else "text", content)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                events += self._tool_call(call)
        if isinstance(choice.get("finish_reason"), str):
            self.finish_reason = choice["finish_reason"]
        for key in ("stop_reason", "matched_stop"):  # vLLM, SGLang
            self._matched(choice.get(key))
        return events

    def _matched(self, sequence: Any) -> None:
        if isinstance(sequence, str) and sequence in self.stop_sequences:
            self.stop_sequence = sequence

    def _piece(self, kind: str, text: str) -> list[Event]:
        self.pieces += 1
        if self.max_tokens == 0 or (kind == "thinking" and not self.thinking):
            return []
        events: list[Event] = []
        if self._open != kind:
            events += self._close()
            self._open = kind
            if kind == "tool_use":  # the forced tool's input, written as content
                self.tool_used = True
                events.append(BlockStart("tool_use", tool_id=new_id("toolu_"), tool_name=self.forced_tool))
            else:
                events.append(BlockStart(kind))  # type: ignore[arg-type]
        if kind == "tool_use":
            events.append(Delta("input_json", text))
        elif kind == "text" or self.thinking_text:
            events.append(Delta(kind, text))  # type: ignore[arg-type]
        return events

    def _tool_call(self, call: dict[str, Any]) -> list[Event]:
        index = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send the whole input as an object
            arguments = json.dumps(arguments, ensure_ascii=False)
        state = self._calls.get(index)
        if state is None:
            state = self._calls[index] = _Call(call.get("id"), function.get("name"))
        else:
            state.id = state.id or call.get("id")
            state.name = state.name or function.get("name")
        if state.closed:
            raise protocol_error(
                f"Engine {self.engine}: the upstream resumed tool call {index} after the next one began."
            )
        self.pieces += 1
        if self.max_tokens == 0:
            return []
        events: list[Event] = []
        if isinstance(arguments, str) and arguments:
            state.pending.append(arguments)
        if not state.opened and isinstance(state.name, str) and state.name:
            events += self._close()
            tool_id = state.id if isinstance(state.id, str) and TOOL_ID.match(state.id) else new_id("toolu_")
            events.append(BlockStart("tool_use", tool_id=tool_id, tool_name=state.name))
            state.opened, self._open, self._open_call, self.tool_used = True, "tool_use", index, True
        if state.opened and state.pending:
            events += [Delta("input_json", text) for text in state.pending]
            state.pending = []
        return events

    def _close(self) -> list[Event]:
        if self._open is None:
            return []
        if self._open_call is not None:
            self._calls[self._open_call].closed = True
        self._open, self._open_call = None, None
        return [BlockStop()]

    # --- the end ------------------------------------------------------------------------------

    def _take_usage(self, reported: dict[str, Any]) -> None:
        prompt = _number(reported.get("prompt_tokens")) or 0
        details = reported.get("prompt_tokens_details")
        cached = _number(details.get("cached_tokens")) if isinstance(details, dict) else None
        cached = min(cached or 0, prompt)
        output = reported.get("completion_tokens_details")
        thinking = _number(output.get("reasoning_tokens")) if isinstance(output, dict) else None
        self.usage = Usage(
            input_tokens=prompt - cached,
            output_tokens=_number(reported.get("completion_tokens")) or 0,
            cache_read_input_tokens=cached,
            thinking_tokens=thinking or 0,
        )

    def _stop_reason(self, usage: Usage) -> StopReason:
        reason = self.finish_reason
        if self.max_tokens == 0:
            return "max_tokens"
        if reason == "length":
            short = self.usage is not None and usage.output_tokens < self.max_tokens
            return "model_context_window_exceeded" if short else "max_tokens"
        if self.tool_used and reason in ("tool_calls", "stop", "function_call"):
            return "tool_use"
        if reason == "stop" and self.stop_sequence is not None:
            return "stop_sequence"
        if reason == "content_filter":
            return "refusal"
        if reason not in ("stop", "tool_calls", "eos", "end_turn"):
            log.warning("%s engine %s: finish_reason %r read as end_turn", self.request_id, self.engine, reason)
        return "end_turn"

