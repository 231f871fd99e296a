"""Models that reason in `<think>...</think>` before they answer (Qwen3, DeepSeek-R1 distills, GLM-4.5).

Whether a model does is read from its chat template, which shows `<think>` (`template_reasons`); the
`reasoning` setting overrides it.

The prompt opens the thinking (or, with thinking off, gives an empty one so the model answers at
once); the output up to `</think>` is the thinking block. A thinking budget is kept by writing the
closing tag for the model when the budget is spent.
"""

from __future__ import annotations

THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"
SKIP_THINKING = "<think>\n\n</think>\n\n"
FORCED_CLOSE = "\n</think>\n\n"


def template_reasons(template: str) -> bool:
    """Whether a chat template is a reasoning model's: it writes or strips `<think>` blocks."""
    return THINK_OPEN.strip() in template or THINK_CLOSE in template


def opened_by_template(rendered: str, prefill: str) -> str:
    """`prefill` without the `<think>` that the template's generation prompt already ends with (R1 distills)."""
    for opener in (THINK_OPEN, THINK_OPEN.strip()):
        if rendered.endswith(opener) and prefill.startswith(opener):
            return prefill[len(opener) :]
    return prefill


class ThinkingSplitter:
    """Feed output text while thinking; get (thinking, after) once the closing tag shows."""

    def __init__(self) -> None:
        self.pending = ""
        self.done = False

    def feed(self, text: str) -> tuple[str, str | None]:
        """Thinking text safe to emit, and the text after `</think>` (None while still thinking)."""
        self.pending += text
        at = self.pending.find(THINK_CLOSE)
        if at != -1:
            thinking, after = self.pending[:at], self.pending[at + len(THINK_CLOSE) :]
            self.pending, self.done = "", True
            return thinking.rstrip("\n"), after.lstrip("\n")
        keep = next((n for n in range(min(len(THINK_CLOSE) - 1, len(self.pending)), 0, -1)
                     if self.pending.endswith(THINK_CLOSE[:n])), 0)
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return out, None
