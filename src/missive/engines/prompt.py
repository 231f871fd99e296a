"""An Anthropic conversation -> the turns a chat template renders, for models that take text.

Input the model cannot take is refused with a 400 that names the block, never silently dropped.
Thinking blocks of earlier turns are left out, as the Claude API does for previous turns.
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


@dataclass
class ChatPrompt:
    turns: list[ChatTurn]
    prefill: str  # text of a final assistant turn, which the response continues


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


def to_chat(generation: Generation) -> ChatPrompt:
    params = generation.params
    turns: list[ChatTurn] = []
    if params.system:
        turns.append(ChatTurn("system", "\n\n".join(block.text for block in params.system)))
    for message in generation.messages:
        texts = [text for text in map(block_text, message.content) if text is not None]
        turns.append(ChatTurn(message.role, "\n\n".join(texts)))
    prefill = ""
    if turns and turns[-1].role == "assistant":
        prefill = turns.pop().content
    return ChatPrompt(turns, prefill)
