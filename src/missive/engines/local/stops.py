"""Stop sequences over streamed text: hold back what could still become a stop sequence."""

from __future__ import annotations


class StopMatcher:
    """Feed text pieces; get back the text that is safe to emit, and the stop sequence once one matches.

    The stop text itself is never emitted (spec §5: it is not part of `content`).
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.pending = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        first: tuple[int, str] | None = None
        for stop in self.stops:
            at = self.pending.find(stop)
            if at != -1 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self.matched = first[1]
            out, self.pending = self.pending[: first[0]], ""
            return out
        keep = self._partial_suffix()
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest end of `pending` that begins some stop sequence."""
        longest = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:size]):
                    longest = size
                    break
        return longest
