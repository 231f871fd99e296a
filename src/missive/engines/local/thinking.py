"""Models that reason before they answer: in `<think>...</think>` (Qwen3, DeepSeek-R1 distills, GLM-4.5), or in
harmony's `analysis` channel (gpt-oss).

Whether a model does is read from its chat template, which shows `<think>` or harmony's channels
(`template_reasons`); the `reasoning` setting overrides it. How it does is a `ThinkingSyntax`.

The prompt opens the thinking (or, with thinking off, gives an empty one so the model answers at
once); the output up to the closing tag is the thinking block. A thinking budget is kept by writing the
closing tag for the model when the budget is spent.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"
SKIP_THINKING = "<think>\n\n</think>\n\n"
FORCED_CLOSE = "\n</think>\n\n"


@dataclass(frozen=True)
class ThinkingSyntax:
    name: str
    open: str  # the prefill that opens the thinking
    skip: str  # the prefill of an empty thinking, after which the model answers
    close: str  # the end of the thinking in the output
    forced_close: str  # what is written for the model when its budget is spent (or it stops while thinking)
    answer: str = ""  # what comes between an empty thinking and the text of an assistant prefill

    def prefill(self, thinking_on: bool, text: str) -> str:
        """The prefill that opens the thinking, or skips it, before an assistant prefill `text`."""
        if thinking_on:
            return self.open + text
        return self.skip + (self.answer + text if text else "")


THINK_TAGS = ThinkingSyntax("<think>", THINK_OPEN, SKIP_THINKING, THINK_CLOSE, FORCED_CLOSE)
# gpt-oss: the generation prompt ends with `<|start|>assistant`; the thinking is an analysis message, which
# ends with <|end|> (llama.cpp keeps <|end|> out of gpt-oss's end-of-generation tokens); the answer, or a
# call, is the next message.
HARMONY_ANALYSIS = ThinkingSyntax(
    "harmony analysis channel",
    "<|channel|>analysis<|message|>",
    "<|channel|>analysis<|message|><|end|><|start|>assistant",
    "<|end|>",
    "<|end|><|start|>assistant",
    answer="<|channel|>final<|message|>",
)


def template_reasons(template: str) -> bool:
    """Whether a chat template is a reasoning model's: it writes or strips `<think>` blocks, or it is harmony's."""
    return THINK_OPEN.strip() in template or THINK_CLOSE in template or template_thinking(template) is HARMONY_ANALYSIS


def template_thinking(template: str) -> ThinkingSyntax:
    """How a template's model thinks (when it does): harmony's channels, else `<think>`."""
    return HARMONY_ANALYSIS if "<|channel|>" in template and "<|message|>" in template else THINK_TAGS


def opened_by_template(rendered: str, prefill: str) -> str:
    """`prefill` without the `<think>` that the template's generation prompt already ends with (R1 distills)."""
    for opener in (THINK_OPEN, THINK_OPEN.strip()):
        if rendered.endswith(opener) and prefill.startswith(opener):
            return prefill[len(opener) :]
    return prefill


class ThinkingSplitter:
    """Feed output text while thinking; get (thinking, after) once the closing tag shows."""

    def __init__(self, close: str = THINK_CLOSE) -> None:
        self.close = close
        self.pending = ""
        self.done = False

    def feed(self, text: str) -> tuple[str, str | None]:
        """Thinking text safe to emit, and the text after the closing tag (None while still thinking)."""
        self.pending += text
        close = self.close
        at = self.pending.find(close)
        if at != -1:
            thinking, after = self.pending[:at], self.pending[at + len(close) :]
            self.pending, self.done = "", True
            return thinking.rstrip("\n"), after.lstrip("\n")
        keep = next((n for n in range(min(len(close) - 1, len(self.pending)), 0, -1)
                     if self.pending.endswith(close[:n])), 0)
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return out, None
