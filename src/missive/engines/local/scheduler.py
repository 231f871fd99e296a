"""Continuous batching over one model: a worker thread that steps all running sequences together.

Each step:
  1. admits waiting jobs into free sequence slots (reusing the longest resident prefix of the same
     workspace, or restoring a cached prefix), and reports their input usage (`Started`);
  2. prefills the next chunk of the sequences still reading their prompts, each chunk in its own
     forward pass, up to `prefill_chunk` tokens per step (one long chunk, or several short prompts).
     Chunks end at positions fixed by the prompt alone (`chunk_ends`), whatever else runs and
     whatever was reused, so a long prompt never stalls the streams for long, and a request computes
     the same numbers alone, under load, and with or without a reused prefix (passes.py: a prefix is
     reused only where it was computed in passes of the kinds the prompt's chunks give it). A
     prompt's last chunk gives its first token;
  3. decodes one token for every sequence that is generating (those whose prompt just ended too),
     in one forward pass.
New requests join and finished ones leave between steps. A cancelled job leaves at the next step.

Priority: interactive requests always go first; batch work (`Job.background`) yields. Background jobs
wait in a queue of their own and are admitted only while no interactive job waits. When an
interactive job waits and no slot is free, the background sequence that started last (least work
lost) is preempted at the next step: it is parked with all its state (sampler, parsers, counts, its
sampled `pending` token) and its client only sees a pause. Once a slot is free and no interactive
job waits, parked sequences resume first (FIFO), then new background jobs. A resumed sequence puts
back the tokens it had in the KV cache (prompt and output so far): what its slot still holds is
reused, the rest is prefilled again (a refill), and decoding goes on from the pending token.
"""

from __future__ import annotations

import bisect
import codecs
import collections
import ctypes
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp import _internals

from missive import metrics
from missive.engines.base import EngineUnavailable
from missive.engines.local.grammar import Grammar
from missive.engines.local.lookup import PromptLookup
from missive.engines.local.model import LocalModel, Prompt
from missive.engines.local.passes import (
    Passes,
    PassShapes,
    chunk_ends,
    decoded,
    exact_positions,
    refill_ends,
    reusable,
)
from missive.engines.local.prompt_cache import Plan, PromptCache, lookup_positions, plan, prefix_keys
from missive.engines.local.repetition import LoopGuard
from missive.engines.local.sampling import Sampling, TokenSampler
from missive.engines.local.stops import StopMatcher
from missive.engines.local.tagged_calls import parser_for
from missive.engines.local.thinking import ThinkingSplitter
from missive.engines.local.toolcalls import CallEnd, CallInput, CallStart, Piece, Splitter, Text
from missive.engines.prompt import ToolFormat, ToolSpec, Ttl
from missive.settings import LocalEngineSettings
from missive.wire.events import BlockStart, BlockStop, Delta, Event, Finished, Started, StopReason, Usage
from missive.wire.ids import new_id

log = logging.getLogger("missive.engine")
# A slot that keeps the busy sequence ids together beats one that holds up to this many more tokens
# of the prompt: prefilling them once costs less than an extra forward pass on every step.
ADJACENCY_WORTH = 32


def overloaded() -> EngineUnavailable:
    return EngineUnavailable(529, "Overloaded", headers={"retry-after": "2"})


@dataclass
class Job:
    """One generation, handed from a request to the worker thread."""

    prompt: Prompt
    max_tokens: int
    sampling: Sampling
    stops: list[str]
    workspace: str
    emit: Callable[[Event | BaseException], None]
    grammar: Grammar | None = None  # constrains the output (tool calls, structured output)
    calls: ToolFormat | None = None  # tools are on: split calls written this way out of the output
    tools: list[ToolSpec] = field(default_factory=list)  # their schemas read untyped values (tagged formats)
    thinking: bool = False  # the output starts inside <think>
    thinking_budget: int | None = None
    show_thinking: bool = True  # display "omitted": the block keeps its signature, not its text
    background: bool = False  # batch work: admitted only into idle capacity, preempted for interactive jobs
    submitted: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Slot:
    """A sequence of the llama.cpp context, and what its KV cells hold now."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    passes: Passes = field(default_factory=Passes)  # how the forward passes that computed `tokens` ran
    workspace: str | None = None
    last_used: float = 0.0
    busy: bool = False


@dataclass
class Sequence:
    job: Job
    slot: Slot
    plan: Plan
    ends: list[int]  # where its prompt's chunks end (`chunk_ends`)
    sampler: TokenSampler
    started: float
    pending: int | None = None  # sampled, not yet in the KV cache
    generated: int = 0
    open_block: str | None = None  # "text", "thinking" or "tool_use"
    calls: Splitter | None = None
    thinking: ThinkingSplitter | None = None
    thinking_tokens: int = 0
    forced: list[int] = field(default_factory=list)  # tokens to write instead of sampling
    first_token_at: float | None = None
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    stops: StopMatcher = field(default_factory=lambda: StopMatcher([]))
    order: int = 0  # admission order: preemption takes the background sequence admitted last
    # While parked: the tokens it had in the KV cache, and the passes that computed them.
    kv: list[int] = field(default_factory=list)
    kv_passes: Passes = field(default_factory=Passes)
    # After a resume: the tokens to put back in the KV cache before it goes on, and its chunk ends.
    refill: list[int] = field(default_factory=list)
    refill_ends: list[int] = field(default_factory=list)
    # Speculative decoding: its tokens so far, indexed (created at its first decode step), and how many
    # tokens it may guess next (more after guesses that held, fewer after those that did not).
    lookup: PromptLookup | None = None
    draft_limit: int = 0

    @property
    def n_past(self) -> int:
        return len(self.slot.tokens)

    @property
    def refilling(self) -> bool:
        return self.n_past < len(self.refill)

    @property
    def prefilling(self) -> bool:
        return self.refilling or self.n_past < len(self.job.prompt.tokens)

    def next_token(self) -> int:
        """The token that follows its KV contents: the sampled `pending` one, or the prompt's next."""
        return self.pending if self.pending is not None else self.job.prompt.tokens[len(self.kv)]


class Scheduler:
    def __init__(
        self,
        model: LocalModel,
        settings: LocalEngineSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.settings = settings
        self.clock = clock
        self.cache = PromptCache(settings.prompt_cache_mib * 1024 * 1024, clock)
        self.slots = [Slot(seq_id) for seq_id in range(model.parallel)]
        self.waiting: collections.deque[Job] = collections.deque()  # interactive jobs
        self.background: collections.deque[Job] = collections.deque()  # batch jobs, not yet started
        self.parked: collections.deque[Sequence] = collections.deque()  # preempted batch sequences
        self.running: list[Sequence] = []
        self.admissions = itertools.count()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.flushes: list[Callable[[], None]] = []  # run after each step: hand the step's events over at once
        self.stopping = False
        self.batch_capacity = max(settings.prefill_chunk, model.parallel)  # the context's n_batch too
        self.batch = _internals.LlamaBatch(n_tokens=self.batch_capacity, embd=0, n_seq_max=1)
        self.exact_to = exact_positions(settings, model.n_ctx_seq)
        self.shapes = PassShapes(settings)
        self.drafted = self.accepted = 0  # speculative tokens, since the start
        self.labels = {"model": model.config.id}
        self.close_thinking = model.tokenize_continuation(model.thinking_syntax.forced_close)
        self.thread = threading.Thread(target=self._loop, name=f"engine-{model.config.id}", daemon=True)

    # --- called from the event loop -----------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue a job. Interactive jobs past `max_queue` (beyond the slots they can have: free ones and
        those of background sequences, which they preempt) are refused with a 529. Background jobs
        are never refused here: the batch worker bounds how many it has in flight."""
        with self.lock:
            if job.background:
                self.background.append(job)
            else:
                free = sum(not slot.busy for slot in self.slots)
                preemptible = sum(s.job.background for s in list(self.running))
                if len(self.waiting) >= self.settings.max_queue + free + preemptible:
                    metrics.OVERLOADED.labels(**self.labels).inc()
                    raise overloaded()
                self.waiting.append(job)
            self._queue_metrics()
        self.wake.set()

    # --- worker thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping:
            try:
                self._admit()
                self._flush()
                if not self.running:
                    self.wake.wait(0.5)
                    self.wake.clear()
                    self.cache.expire()
                    continue
                self._step()
            except Exception as exc:  # a bug, not a request's fault: fail what runs, keep serving
                log.exception("engine step failed")
                for sequence in list(self.running):
                    self._leave(sequence)
                    sequence.job.emit(exc)
                for slot in self.slots:
                    self._clear(slot)
            finally:
                self._flush()

    def _flush(self) -> None:
        """Hand over what this step emitted (relay.py: one event-loop wake-up per step, not per event)."""
        for flush in self.flushes:
            flush()

    def _admit(self) -> None:
        """Interactive jobs first, preempting background sequences for them; then, only into capacity that
        no interactive job wants, parked sequences (FIFO) and new background jobs."""
        with self.lock:
            self._drop_cancelled_background()
            self._admit_interactive()
            if not self.waiting:
                while self.parked and self._free():
                    self._try_resume(self.parked.popleft())
                while self.background and self._free():
                    self._try_start(self.background.popleft())
            self._queue_metrics()
        metrics.ACTIVE_SEQUENCES.labels(**self.labels).set(len(self.running))

    def _admit_interactive(self) -> None:
        now = time.monotonic()
        while self.waiting:
            job = self.waiting[0]
            if job.cancelled.is_set():
                self.waiting.popleft()
            elif now - job.submitted > self.settings.max_queue_wait:
                self.waiting.popleft()
                metrics.OVERLOADED.labels(**self.labels).inc()
                job.emit(overloaded())
            elif self._free() or self._preempt():
                self._try_start(self.waiting.popleft())
            else:
                break

    def _free(self) -> bool:
        return any(not slot.busy for slot in self.slots)

    def _try_start(self, job: Job) -> None:
        try:
            self._start(job)
        except Exception as exc:
            log.exception("could not start a generation")
            job.emit(exc)

    def _try_resume(self, sequence: Sequence) -> None:
        try:
            self._resume(sequence)
        except Exception as exc:
            log.exception("could not resume a generation")
            if sequence in self.running:
                self._leave(sequence)
            else:
                sequence.sampler.close()
            sequence.job.emit(exc)

    def _drop_cancelled_background(self) -> None:
        """Background jobs wait for as long as interactive ones keep the slots, so their cancellations are
        swept at every step, not only when they reach the head of their queue."""
        if any(job.cancelled.is_set() for job in self.background):
            self.background = collections.deque(job for job in self.background if not job.cancelled.is_set())
        for sequence in [s for s in self.parked if s.job.cancelled.is_set()]:
            log.info("parked generation cancelled after %d tokens", sequence.generated)
            self.parked.remove(sequence)
            sequence.sampler.close()  # its slot is no longer its own: nothing else to free

    def _queue_metrics(self) -> None:
        metrics.QUEUE_DEPTH.labels(**self.labels).set(len(self.waiting))
        metrics.BACKGROUND_WAITING.labels(**self.labels).set(len(self.background) + len(self.parked))

    # --- preemption ------------------------------------------------------------------------------

    def _preempt(self) -> bool:
        """Park the background sequence admitted last (it has the least work to lose, and the older ones
        keep making progress), freeing its slot; False when no background sequence runs."""
        candidates = [s for s in self.running if s.job.background and not s.job.cancelled.is_set()]
        if not candidates:
            return False
        sequence = max(candidates, key=lambda s: s.order)
        slot = sequence.slot
        # What it needs back in the KV cache: what the slot holds, or all of an unfinished refill.
        kv = sequence.refill if sequence.refilling else slot.tokens
        sequence.kv = list(kv)
        sequence.kv_passes = slot.passes.copy()  # how the part the slot holds was computed: for reuse at resume
        sequence.refill, sequence.refill_ends = [], []
        self.running.remove(sequence)
        slot.busy = False  # its KV stays resident: if nobody takes the slot, the resume reuses it all
        slot.last_used = time.monotonic()
        self.parked.append(sequence)
        metrics.PREEMPTIONS.labels(**self.labels).inc()
        log.info("background generation parked after %d tokens (%d in the KV cache)", sequence.generated, len(kv))
        return True

    def _resume(self, sequence: Sequence) -> None:
        """Give a parked sequence a slot again and plan the refill of what the slot does not hold.

        The slot is chosen as for a new job (`_choose_slot`): the one of its workspace that keeps the
        longest prefix computed as the parked sequence's was, up to one of its passes' ends. The refill
        passes end at the prompt's own chunk ends over the prompt, so the prompt's KV numbers are those
        of the first prefill; the output tokens, first computed one pass each, are computed again in
        chunks. Nothing is saved to the prompt cache here: its writes belong to the first prefill only.
        """
        kv, workspace = sequence.kv, sequence.job.workspace
        tokens = [*kv, sequence.next_token()]
        slot, reused = self._choose_slot(tokens, sequence.kv_passes, workspace, mid_pass=False)
        slot.busy, slot.workspace = True, workspace
        sequence.slot = slot
        self.running.append(sequence)
        self._truncate(slot, reused)
        prompt_length = len(sequence.job.prompt.tokens)
        sequence.refill = kv
        sequence.refill_ends = refill_ends(sequence.ends, prompt_length, len(kv), self.settings.prefill_chunk)
        sequence.kv, sequence.kv_passes = [], Passes()
        metrics.PREFIX_TOKENS_REUSED.labels(**self.labels).inc(reused)
        refill = len(kv) - reused
        log.info("background generation resumed in slot %d: %d tokens reused, %d to refill", slot.seq_id, reused, refill)

    def _start(self, job: Job) -> None:
        """Give a job a slot, reuse what the KV cache already holds, and report its input usage."""
        ends = chunk_ends(job.prompt, self.settings.prefill_chunk)
        target = self.shapes.plan(ends, job.prompt)
        slot, reused = self._choose_slot(job.prompt.tokens, target, job.workspace)
        slot.busy, slot.workspace = True, job.workspace
        try:
            self._start_in(slot, reused, ends, target, job)
        except Exception:
            slot.busy = False
            self._clear(slot)
            raise

    def _start_in(self, slot: Slot, reused: int, ends: list[int], target: Passes, job: Job) -> None:
        started = self.clock()
        tokens = job.prompt.tokens

        breakpoints = job.prompt.breakpoints
        hit = None
        if breakpoints:
            positions = lookup_positions(job.prompt.boundaries, breakpoints)
            keys = prefix_keys(job.workspace, tokens, ends, positions)
            hit = self.cache.find(keys)
        read = hit.length if hit is not None else 0
        min_tokens = self.model.config.min_cache_tokens
        usage_plan = plan(len(tokens), breakpoints, read, lambda p: p >= min_tokens and self.cache.fits(p))
        if hit is not None:
            ttl = next((t for p, t in breakpoints if p >= hit.length), None)
            self.cache.touch(hit, ttl, started)
            metrics.CACHE_READ_TOKENS.labels(**self.labels).inc(hit.length)
            if hit.length > reused:  # the key matched, so its passes ended where this prompt's chunks end
                self._restore(slot, hit.state, tokens[: hit.length], target.copy())
                reused = reusable(slot.tokens, slot.passes, tokens, target)
        keep = reused
        if usage_plan.writes:  # each write is saved from a prefill that ends exactly at its position
            keep = min([keep, *(p for p, _ in usage_plan.writes)])
        self._truncate(slot, keep)
        metrics.PREFIX_TOKENS_REUSED.labels(**self.labels).inc(keep)
        metrics.CACHE_WRITE_TOKENS.labels(**self.labels).inc(usage_plan.write_1h + usage_plan.write_5m)

        sequence = Sequence(
            job,
            slot,
            usage_plan,
            ends,
            TokenSampler(self.model.vocab, job.sampling, job.grammar, self._loop_guard(job)),
            started,
            stops=StopMatcher(job.stops),
            calls=parser_for(job.calls, job.tools) if job.calls is not None else None,
            thinking=ThinkingSplitter(self.model.thinking_syntax.close) if job.thinking else None,
            order=next(self.admissions),
        )
        for position, ttl in usage_plan.writes:
            if position == keep:  # the slot already holds exactly this prefix
                self._save(sequence, position, ttl)
        self.running.append(sequence)
        usage = Usage(
            input_tokens=usage_plan.input,
            cache_read_input_tokens=usage_plan.read,
            cache_write_5m_tokens=usage_plan.write_5m,
            cache_write_1h_tokens=usage_plan.write_1h,
        )
        job.emit(Started(usage))
        log.debug(
            "slot %d: %d prompt tokens, %d reused, plan %s", slot.seq_id, len(tokens), keep, usage_plan
        )

    def _loop_guard(self, job: Job) -> LoopGuard | None:
        if job.grammar is None or not job.grammar.guard:
            return None
        model = self.model
        return LoopGuard(job.grammar.json_after, model.output_piece, model.closing_tokens, model.end_tokens)

    def _choose_slot(
        self, tokens: list[int], target: Passes, workspace: str, mid_pass: bool = True
    ) -> tuple[Slot, int]:
        """The free slot for `tokens`, and how many of its resident tokens it can reuse (`reusable`).

        The slot of this workspace holding the longest prefix; but a slot next to busy ones whose
        prefix is at most `ADJACENCY_WORTH` tokens shorter goes first (see `_step`: each gap between
        busy ids costs a forward pass per step); then the least recently used. A slot last used by
        another workspace is wiped before use: reuse never crosses workspaces.
        """
        busy = {slot.seq_id for slot in self.slots if slot.busy}
        free = [slot for slot in self.slots if not slot.busy]
        reuse = {
            slot.seq_id: reusable(slot.tokens, slot.passes, tokens, target, mid_pass)
            if slot.workspace == workspace else 0
            for slot in free
        }
        best = max(reuse.values())

        def rank(slot: Slot) -> tuple[bool, int, int, float]:
            neighbours = (slot.seq_id - 1 in busy) + (slot.seq_id + 1 in busy)
            return (reuse[slot.seq_id] >= best - ADJACENCY_WORTH, neighbours, reuse[slot.seq_id], -slot.last_used)

        slot = max(free, key=rank)
        if slot.workspace != workspace:
            self._clear(slot)
        return slot, reuse[slot.seq_id]

    def _truncate(self, slot: Slot, keep: int) -> None:
        """Keep the first `keep` tokens (`reusable` chose where)."""
        if keep < len(slot.tokens):
            llama_cpp.llama_memory_seq_rm(self.model.memory, slot.seq_id, keep, -1)
            del slot.tokens[keep:]
            slot.passes.truncate(keep)

    def _clear(self, slot: Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)
        slot.tokens.clear()
        slot.passes.clear()
        slot.workspace = None

    def _restore(self, slot: Slot, state: bytes, tokens: list[int], passes: Passes) -> None:
        """Put a cached prefix in the slot, computed in the prompt's own `passes` (its key says so)."""
        llama_cpp.llama_memory_seq_rm(self.model.memory, slot.seq_id, -1, -1)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama_cpp.llama_state_seq_set_data(self.model.ctx, buffer, len(state), slot.seq_id) == 0:
            raise RuntimeError("could not restore a cached prefix")
        slot.tokens[:] = tokens
        passes.truncate(len(tokens))
        slot.passes = passes

    def _save(self, sequence: Sequence, position: int, ttl: Ttl) -> None:
        seq_id = sequence.slot.seq_id
        size = llama_cpp.llama_state_seq_get_size(self.model.ctx, seq_id)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.model.ctx, buffer, size, seq_id)
        tokens = sequence.job.prompt.tokens
        # the slot holds what the prompt's own chunks compute (a reused prefix changes no number)
        key = prefix_keys(sequence.job.workspace, tokens, sequence.ends, [position])[position]
        self.cache.put(key, position, bytes(buffer)[:written], ttl, sequence.started)
        metrics.PROMPT_CACHE_BYTES.labels(**self.labels).set(self.cache.size)

    # --- one step ------------------------------------------------------------------------------

    def _step(self) -> None:
        for sequence in [s for s in self.running if s.job.cancelled.is_set()]:
            log.info("generation cancelled after %d tokens", sequence.generated)
            self._leave(sequence)
        budget = self.settings.prefill_chunk  # prompt tokens per step: one long chunk, or several short prompts
        prefilling = [s for s in self.running if s.prefilling and not s.job.cancelled.is_set()]
        for sequence in sorted(prefilling, key=lambda s: s.job.background):  # interactive prompts first
            if budget <= 0:
                break
            budget -= self._refill_chunk(sequence) if sequence.refilling else self._prefill_chunk(sequence)
        if any(s.generated == 1 for s in prefilling):  # a first token: to its client now, not after the decode pass
            self._flush()
        # A prompt that was just finished joins this decode pass, so its slot is no gap in it. In
        # sequence-id order: llama.cpp runs sequences with separate KV streams in one pass only while
        # their ids follow each other in the batch; out of order or with gaps, one step takes several passes.
        # A sequence still refilling holds its pending token back until its KV cache is whole again.
        ready = (s for s in self.running if s.pending is not None and not s.refilling)
        decoding = sorted(ready, key=lambda s: s.slot.seq_id)
        if decoding:
            self.batch.reset()
            for sequence in decoding:
                self._add(sequence.pending, sequence.n_past, sequence.slot.seq_id, True)
            drafts = self._drafts(decoding)  # speculation: guessed tokens after the pending ones, with their rows
            for sequence, draft, _ in drafts:
                for offset, token in enumerate(draft, start=1):
                    self._add(token, sequence.n_past + offset, sequence.slot.seq_id, True)
            self._decode()
            for index, sequence in enumerate(decoding):
                self._commit(sequence)
                self._sample(sequence, index)
            for sequence, draft, row in drafts:
                self._verify(sequence, draft, row)

    def _commit(self, sequence: Sequence) -> None:
        """The pending token's KV has been computed: it joins the slot, in a pass that ended with it."""
        sequence.slot.tokens.append(sequence.pending)
        sequence.slot.passes.add(sequence.n_past, decoded(sequence.n_past - 1))
        sequence.pending = None

    # --- speculative decoding (prompt lookup) -----------------------------------------------------

    def _drafts(self, decoding: list[Sequence]) -> list[tuple[Sequence, list[int], int]]:
        """Guesses to verify in this pass: (sequence, tokens, batch row of the first), where exact.

        Only greedy sequences without a grammar speculate (their next token is the argmax whatever the
        pass), and only where llama.cpp computes a row of a multi-token pass to the bit as it computes
        the token decoded alone (`exact_to`): then the output is the same token for token."""
        if not self.settings.speculative or self.settings.unified_kv:
            return []
        if len(decoding) > self.settings.speculative_max_sequences:
            return []
        found, row = [], len(decoding)
        room = self.batch_capacity - row
        for sequence in decoding:
            if not sequence.sampler.greedy:
                continue
            if sequence.lookup is None:
                sequence.lookup = PromptLookup([*sequence.slot.tokens, sequence.pending], self.settings.speculative_ngram)
                sequence.draft_limit = self.settings.speculative_max_draft
            limit = min(
                sequence.draft_limit,
                sequence.job.max_tokens - sequence.generated - 1,  # each kept guess is one more output token
                self.exact_to - sequence.n_past - 1,
                room,
            )
            draft = sequence.lookup.draft(limit)
            if draft:
                found.append((sequence, draft, row))
                row += len(draft)
                room -= len(draft)
        return found

    def _verify(self, sequence: Sequence, draft: list[int], row: int) -> None:
        """Keep the guesses that greedy decoding confirms, one by one as a plain step would take them, and
        drop the KV of the rest. Row `row + i` holds the logits that follow `draft[i]`."""
        accepted = 0
        for token in draft:
            if sequence.pending != token:  # a different token, or the sequence has finished
                break
            self._commit(sequence)  # its KV was computed in this pass
            self._sample(sequence, row + accepted)
            accepted += 1
        llama_cpp.llama_memory_seq_rm(self.model.memory, sequence.slot.seq_id, sequence.n_past, -1)
        sequence.draft_limit = min(self.settings.speculative_max_draft, 2 * accepted + 1)
        self.drafted += len(draft)
        self.accepted += accepted
        metrics.SPECULATIVE_DRAFTED.labels(**self.labels).inc(len(draft))
        metrics.SPECULATIVE_ACCEPTED.labels(**self.labels).inc(accepted)
        metrics.SPECULATIVE_ACCEPTANCE.labels(**self.labels).set(self.accepted / self.drafted)

    def _prefill_chunk(self, sequence: Sequence) -> int:
        """Prefill the next chunk of the sequence's prompt, in a forward pass of its own; returns its length."""
        tokens = sequence.job.prompt.tokens
        start = sequence.n_past
        end = sequence.ends[bisect.bisect_right(sequence.ends, start)]
        image = self._image_chunk(sequence, start)
        if not image:
            self.batch.reset()
            for position in range(start, end):
                self._add(tokens[position], position, sequence.slot.seq_id, position == len(tokens) - 1)
            self._decode()
        sequence.slot.tokens.extend(tokens[start:end])
        sequence.slot.passes.add(end, self.shapes.kind(start, end, image))
        for position, ttl in sequence.plan.writes:
            if position == end:
                self._save(sequence, position, ttl)
        if end == len(tokens):
            if sequence.job.max_tokens == 0:  # pre-warming the cache: prefill only
                self._finish(sequence, "max_tokens")
            else:
                self._sample(sequence, end - start - 1)
        return end - start

    def _refill_chunk(self, sequence: Sequence) -> int:
        """Put the next chunk of a resumed sequence's former KV contents back, in a forward pass of its own
        (no logits: the token that follows is already known); returns its length. No cache writes."""
        tokens, start = sequence.refill, sequence.n_past
        end = sequence.refill_ends[bisect.bisect_right(sequence.refill_ends, start)]
        image = self._image_chunk(sequence, start)
        if not image:
            self.batch.reset()
            for position in range(start, end):
                self._add(tokens[position], position, sequence.slot.seq_id, False)
            self._decode()
        sequence.slot.tokens.extend(tokens[start:end])
        sequence.slot.passes.add(end, self.shapes.kind(start, end, image))
        if end == len(tokens):
            sequence.refill, sequence.refill_ends = [], []
        return end - start

    def _image_chunk(self, sequence: Sequence, start: int) -> bool:
        """Whether an image chunk of the prompt starts here; if so it is encoded now and its embeddings
        decoded at its positions (its own passes: `chunk_ends` puts chunk ends at both its ends)."""
        span = sequence.job.prompt.image_at(start)
        if span is None:
            return False
        assert self.model.vision is not None
        self.model.vision.decode(span, self.model.ctx, sequence.slot.seq_id)
        return True

    def _add(self, token: int, position: int, seq_id: int, logits: bool) -> None:
        batch = self.batch.batch
        i = batch.n_tokens
        batch.token[i] = token
        batch.pos[i] = position
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = logits
        batch.n_tokens = i + 1

    def _decode(self) -> None:
        status = llama_cpp.llama_decode(self.model.ctx, self.batch.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")

    def _sample(self, sequence: Sequence, index: int) -> None:
        """Sample the next token from row `index` of the last forward pass, and act on it."""
        model, job = self.model, sequence.job
        thinking = sequence.thinking is not None and not sequence.thinking.done
        if not sequence.forced:
            token = sequence.sampler.sample(model.ctx, index)
            if thinking and model.is_end_of_generation(token):  # stopped while thinking: close it, then answer
                sequence.forced = list(self.close_thinking)
        if sequence.forced:
            token = sequence.forced.pop(0)
            sequence.sampler.accept(token)
        sequence.generated += 1
        if thinking:
            sequence.thinking_tokens += 1
            budget = job.thinking_budget
            if budget is not None and not sequence.forced:
                if sequence.thinking_tokens + len(self.close_thinking) >= budget:  # the closing tag counts too
                    sequence.forced = list(self.close_thinking)
        now = time.monotonic()
        if sequence.first_token_at is None:
            sequence.first_token_at = now
            metrics.TIME_TO_FIRST_TOKEN.labels(**self.labels).observe(now - job.submitted)
        if model.is_end_of_generation(token):
            return self._finish(sequence, "end_turn")
        self._output(sequence, sequence.decoder.decode(model.output_piece(token)))
        if sequence.stops.matched is not None:
            return self._finish(sequence, "stop_sequence")
        if sequence.generated >= job.max_tokens:
            return self._finish(sequence, "max_tokens")
        if sequence.n_past >= model.n_ctx_seq:
            return self._finish(sequence, "model_context_window_exceeded")
        sequence.pending = token
        if sequence.lookup is not None:
            sequence.lookup.append(token)

    def _output(self, sequence: Sequence, text: str, final: bool = False) -> None:
        """Route new output text: thinking, plain text (through the stop sequences) and tool calls."""
        splitter = sequence.thinking
        if splitter is not None and not splitter.done:
            if sequence.open_block != "thinking":
                self._open(sequence, BlockStart("thinking"))
            thought, after = splitter.feed(text)
            if final and after is None:
                thought, splitter.pending = thought + splitter.pending, ""
            if thought and sequence.job.show_thinking:
                sequence.job.emit(Delta("thinking", thought))
            if after is None:
                return
            self._close(sequence)
            text = after
        calls = sequence.calls
        pieces: list[Piece] = [Text(text)] if calls is None else calls.feed(text)
        if final and calls is not None:
            pieces += calls.flush()
        for piece in pieces:
            if sequence.stops.matched is not None:
                return
            if isinstance(piece, Text):
                self._emit_text(sequence, sequence.stops.feed(piece.text))
            elif isinstance(piece, CallStart):
                self._emit_text(sequence, sequence.stops.flush())
                self._open(sequence, BlockStart("tool_use", tool_id=new_id("toolu_"), tool_name=piece.name))
            elif isinstance(piece, CallInput):
                sequence.job.emit(Delta("input_json", piece.json))
            elif isinstance(piece, CallEnd):
                self._close(sequence)
        if final and sequence.stops.matched is None:
            self._emit_text(sequence, sequence.stops.flush())

    def _emit_text(self, sequence: Sequence, text: str) -> None:
        if not text:
            return
        if sequence.open_block != "text":
            self._open(sequence, BlockStart("text"))
        sequence.job.emit(Delta("text", text))

    def _open(self, sequence: Sequence, start: BlockStart) -> None:
        self._close(sequence)
        sequence.job.emit(start)
        sequence.open_block = start.kind

    def _close(self, sequence: Sequence) -> None:
        if sequence.open_block is not None:
            sequence.job.emit(BlockStop())
            sequence.open_block = None

    def _finish(self, sequence: Sequence, reason: StopReason) -> None:
        self._output(sequence, sequence.decoder.decode(b"", final=True), final=True)
        self._close(sequence)
        if reason == "end_turn" and sequence.calls is not None and sequence.calls.calls:
            reason = "tool_use"
        p = sequence.plan
        usage = Usage(
            input_tokens=p.input,
            output_tokens=sequence.generated,
            thinking_tokens=sequence.thinking_tokens,
            cache_read_input_tokens=p.read,
            cache_write_5m_tokens=p.write_5m,
            cache_write_1h_tokens=p.write_1h,
        )
        self._leave(sequence)
        sequence.job.emit(Finished(reason, usage, sequence.stops.matched))
        if sequence.first_token_at is not None and sequence.generated > 1:
            elapsed = time.monotonic() - sequence.first_token_at
            if elapsed > 0:
                metrics.DECODE_TOKENS_PER_SECOND.labels(**self.labels).observe((sequence.generated - 1) / elapsed)
        metrics.OUTPUT_TOKENS.labels(**self.labels).inc(sequence.generated)

    def _leave(self, sequence: Sequence) -> None:
        """Free the sequence's slot at once; its KV stays resident for prefix reuse until the slot is taken."""
        if sequence in self.running:
            self.running.remove(sequence)
        sequence.slot.busy = False
        sequence.slot.last_used = time.monotonic()
        sequence.sampler.close()
        metrics.ACTIVE_SEQUENCES.labels(**self.labels).set(len(self.running))
        metrics.KV_TOKENS.labels(**self.labels).set(sum(len(slot.tokens) for slot in self.slots))
