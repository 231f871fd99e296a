"""How the forward passes that fill a sequence's KV cells are shaped, and which resident prefix a prompt
may reuse without changing a number of its response.

A position's KV numbers depend on the kernel that computed them, and llama.cpp's CPU flash attention
picks its kernel by the shape of the pass: a pass of one sequence with 64 query tokens or more takes the
tiled kernel, a shorter one the per-row kernel, and a lone token with 512 KV cells or more the split-KV
kernel. Within one kernel, each row is computed alike whatever else the pass holds. So two computations
of the same tokens give the same bits wherever each position was computed in a pass of the same *kind*
(`bench/verify_identity.py --chunking` checks it). With a q8_0 KV cache every multi-token pass takes the
per-row kernel. Without flash attention, or with a unified KV buffer, no such rule is established, and
a kind is the pass itself: a prefix is reused only where it was computed in exactly the same passes.

A prompt's chunk ends are a function of the prompt alone (`chunk_ends`); `reusable` finds the longest
resident prefix whose positions all have the kinds that the prompt's own chunks would give them, and
that ends where the rest of its chunk can be computed in a pass of that chunk's kind. See docs/engine.md.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from missive.settings import LocalEngineSettings

if TYPE_CHECKING:
    from missive.engines.local.model import Prompt

Kind = Hashable
TILE = 64  # llama.cpp's CPU flash attention: query tokens from which a pass is tiled (GGML_FA_TILE_Q)


def decoded(position: int) -> Kind:
    """A token decoded in a step beside other sequences: its numbers depend on the step, so it is reused
    only by the sequence that computed it (a resume), never by another prompt."""
    return ("decoded", position)


@dataclass
class Passes:
    """How positions 0..ends[-1] of a sequence were (or will be) computed: each pass's end and its kind."""

    ends: list[int] = field(default_factory=list)
    kinds: list[Kind] = field(default_factory=list)

    def add(self, end: int, kind: Kind) -> None:
        self.ends.append(end)
        self.kinds.append(kind)

    def truncate(self, keep: int) -> None:
        """Keep positions below `keep`: a pass cut short keeps its kind (its positions were computed so)."""
        count = bisect.bisect_left(self.ends, keep) + (keep > 0)  # passes before `keep`, and the one holding it
        del self.ends[count:], self.kinds[count:]
        if keep > 0:
            self.ends[-1] = keep

    def clear(self) -> None:
        self.ends.clear()
        self.kinds.clear()

    def copy(self) -> Passes:
        return Passes(list(self.ends), list(self.kinds))


class PassShapes:
    """Which passes compute a position alike, for one context's settings."""

    def __init__(self, settings: LocalEngineSettings) -> None:
        self.by_size = settings.flash_attention and not settings.unified_kv
        self.tiled = settings.kv_cache_type == "f16"  # a quantized cache is never tiled

    def kind(self, start: int, end: int, image: bool = False) -> Kind:
        """The kind of a pass of one sequence over positions [start, end)."""
        n = end - start
        if image or not self.by_size:
            return ("pass", start, end)
        if n == 1:
            return ("lone", start)
        return "tiled" if self.tiled and n >= TILE else "rows"

    @staticmethod
    def latest_start(kind: Kind, start: int, end: int) -> int:
        """The latest position from which a pass to `end` computes its positions as the pass [start, end)
        of this kind does."""
        if kind == "tiled":
            return end - TILE
        if kind == "rows":
            return end - 2
        return start

    def plan(self, ends: list[int], prompt: Prompt | None = None) -> Passes:
        """The passes that chunk `ends` give (an image chunk is a pass of its own kind)."""
        passes, start = Passes(), 0
        for end in ends:
            passes.add(end, self.kind(start, end, image=prompt is not None and prompt.image_at(start) is not None))
            start = end
        return passes


def reusable(held_tokens: list[int], held: Passes, tokens: list[int], target: Passes, mid_pass: bool = True) -> int:
    """How much of a sequence's resident KV (`held_tokens`, computed in `held`) a computation of `tokens` in
    the passes `target` can keep: the longest common prefix whose positions have the kinds that `target`
    gives them and that ends at one of `target`'s ends, or (`mid_pass`) inside a pass from where the rest
    of it computes alike. At least the last token is computed again (it gives the first token's logits).
    """
    limit = min(_common_prefix(held_tokens, tokens), len(tokens) - 1)
    best = position = i = j = 0
    while position < limit and i < len(held.ends) and j < len(target.ends):
        if held.kinds[i] != target.kinds[j]:
            break
        start, end = (target.ends[j - 1] if j else 0), target.ends[j]
        reach = min(held.ends[i], end, limit)
        if reach == end:
            best = end
        elif mid_pass:
            best = max(best, min(reach, PassShapes.latest_start(target.kinds[j], start, end)))
        position = reach
        i += position == held.ends[i]
        j += position == end
    return best


def chunk_ends(prompt: Prompt, chunk: int) -> list[int]:
    """Where the prompt's prefill chunks end: at multiples of `chunk`, at its end, and, when it has cache
    breakpoints, at every block boundary up to the last breakpoint.

    A function of the prompt alone, never of what was reused, so a request computes the same numbers
    with or without a reused prefix (`reusable`). Block boundaries are among them because a cache entry
    saved at an earlier request's breakpoint is found at one of this request's block boundaries (the
    lookback), and the blocks before it are the same in both requests, so both chunk that prefix alike.
    Past the last breakpoint nothing is saved or looked up, and each extra pass would cost a step.
    """
    length = len(prompt.tokens)
    ends = set(range(chunk, length, chunk)) | {length}
    if prompt.breakpoints:
        last = max(position for position, _ in prompt.breakpoints)
        ends.update(p for p in prompt.boundaries if 0 < p <= last and p < length)
    for span in prompt.images:  # an image is read in passes of its own, whole
        ends = {end for end in ends if not span.start < end < span.end} | {span.end}
        if span.start > 0:
            ends.add(span.start)
    return sorted(ends)


def refill_ends(prompt_ends: list[int], prompt_length: int, length: int, chunk: int) -> list[int]:
    """Where the refill of a resumed sequence's first `length` KV tokens ends its passes: at the prompt's
    own chunk ends over the prompt (the same numbers as its first prefill), then every `chunk` tokens
    of its output so far, and at `length`."""
    ends = [end for end in prompt_ends if end <= length]
    if length > prompt_length:
        ends += [*range(prompt_length + chunk, length, chunk), length]
    return ends


def exact_positions(settings: LocalEngineSettings, n_ctx_seq: int) -> int:
    """How many positions a sequence may fill while a speculative pass stays exact: llama.cpp's CPU
    kernels give each row of a multi-token pass of one sequence the same logits, to the bit, as the
    token decoded alone (`bench/verify_identity.py`) with flash attention and a q8_0 KV cache at any
    length, and with an f16 cache only while the KV view is under 512 cells (256 positions: past
    them, a lone query takes flash attention's split-KV path). Without flash attention, never."""
    if not settings.flash_attention:
        return 0
    return n_ctx_seq if settings.kv_cache_type == "q8_0" else min(n_ctx_seq, 256)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
