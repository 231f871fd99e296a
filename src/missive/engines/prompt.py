"""An Anthropic conversation -> the turns a chat template renders, for models that take text.

Input the model cannot take is refused with a 400 that names the block, never silently dropped.
Thinking blocks of earlier turns are left out, as the Claude API does for previous turns.

Every block's text is followed by `MARK`, so that the engine can find where each block ends in the
rendered prompt (prompt caching works at block boundaries); `ChatPrompt.marks` holds, for each mark
in prompt order, the cache TTL of a breakpoint there, or None. The engine strips the marks.
"""

from __future__ import annotations

from dataclasses import dataclass

from missive.engines.base import Generation, ModelCard
from missive.wire import requests as rq
from missive.wire.errors import invalid

_TOOL_BLOCKS = (
    rq.ToolUseBlock,
    rq.ToolResultBlock,
    rq.ServerToolUseBlock,
    rq.ServerToolResultBlock,
    rq.ContainerUploadBlock,
)


@dataclass
class ChatTurn:
    role: str  # "system", "user" or "assistant"
    content: str


MARK = "\U000f8000"  # a private-use character, never part of a real prompt
BILLING_HEADER = "x-anthropic-billing-header:"
Ttl = str  # "5m" or "1h"


@dataclass
class ChatPrompt:
    turns: list[ChatTurn]
    prefill: str  # text of a final assistant turn, which the response continues
    marks: list[Ttl | None]


def check_input_support(params: rq.ConversationParams, card: ModelCard) -> None:
    """Refuse, by path, what this model cannot read."""
    caps = card.capabilities
    if params.tools and not caps.tools:
        raise invalid(f"tools: tool use is not supported by model {card.id}")
    for i, message in enumerate(params.messages):
        for j, block in enumerate(message.content):
            path = f"messages.{i}.content.{j}"
            inner = block.content if isinstance(block, rq.ToolResultBlock) and isinstance(block.content, list) else []
            for candidate in [block, *inner]:
                if isinstance(candidate, rq.ImageBlock) and not caps.image_input:
                    raise invalid(f"{path}: model {card.id} does not support image input")
                if isinstance(candidate, rq.DocumentBlock) and not caps.pdf_input:
                    if not isinstance(candidate.source, (rq.PlainTextSource, rq.ContentSource)):
                        raise invalid(f"{path}: model {card.id} does not support PDF or URL document input")
            if isinstance(block, _TOOL_BLOCKS) and not caps.tools:
                raise invalid(f"{path}: model {card.id} does not support tool use ({block.type} blocks)")


def _document_text(block: rq.DocumentBlock) -> str:
    source = block.source
    if isinstance(source, rq.PlainTextSource):
        body = source.data
    elif isinstance(source, rq.ContentSource):
        if isinstance(source.content, str):
            body = source.content
        else:
            body = "\n".join(part.text for part in source.content if isinstance(part, rq.TextBlock))
    else:  # refused earlier by check_input_support
        raise invalid(f"document source {source.type} is not supported")
    header = "\n".join(part for part in (block.title, block.context) if part)
    return f"<document>\n{header + chr(10) if header else ''}{body}\n</document>"


def block_text(block: rq.ContentBlock) -> str | None:
    """The text a model sees for one block; None for blocks it does not see."""
    if isinstance(block, rq.TextBlock):
        return block.text
    if isinstance(block, rq.DocumentBlock):
        return _document_text(block)
    if isinstance(block, rq.SearchResultBlock):
        body = "\n".join(part.text for part in block.content)
        return f"<search_result source={block.source!r} title={block.title!r}>\n{body}\n</search_result>"
    if isinstance(block, rq.MidConversationSystemBlock):
        return "\n".join(part.text for part in block.content)
    return None  # thinking and redacted thinking of earlier turns


def _ttl(block: object) -> Ttl | None:
    cache_control = getattr(block, "cache_control", None)
    return (cache_control.ttl or "5m") if cache_control is not None else None


def _is_billing_stamp(block: rq.TextBlock) -> bool:
    """Claude Code's per-request billing stamp (`cch=...`) would defeat prefix reuse; the model needs none of it."""
    return block.text.startswith(BILLING_HEADER)


def to_chat(generation: Generation) -> ChatPrompt:
    params = generation.params
    marks: list[Ttl | None] = []

    def joined(pieces: list[tuple[str, Ttl | None]]) -> str:
        marks.extend(ttl for _, ttl in pieces)
        return "\n\n".join(text.replace(MARK, "") + MARK for text, _ in pieces)

    turns: list[ChatTurn] = []
    system = [(block.text, _ttl(block)) for block in params.system or [] if not _is_billing_stamp(block)]
    if system:
        turns.append(ChatTurn("system", joined(system)))
    for message in generation.messages:
        pieces = [(text, _ttl(block)) for block in message.content if (text := block_text(block)) is not None]
        turns.append(ChatTurn(message.role, joined(pieces)))
    if params.cache_control is not None and marks:  # automatic caching: the last cacheable block
        marks[-1] = marks[-1] or params.cache_control.ttl or "5m"
    prefill = ""
    if turns and turns[-1].role == "assistant":
        prefill = turns.pop().content
    return ChatPrompt(turns, prefill, marks)
