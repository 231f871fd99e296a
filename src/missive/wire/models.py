"""`ModelInfo`, and list pages with their query, in the Claude API's shapes (spec §12)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass
class Capabilities:
    image_input: bool = False
    pdf_input: bool = False
    tools: bool = False
    thinking: bool = False
    structured_outputs: bool = False


@dataclass
class ModelCard:
    """What the server knows about one model: its limits and what input it takes (a ModelInfo's content)."""

    id: str
    display_name: str
    context_window: int
    max_output_tokens: int
    created_at: str = "1970-01-01T00:00:00Z"
    capabilities: Capabilities = field(default_factory=Capabilities)


def _supported(value: bool) -> dict[str, bool]:
    return {"supported": value}


def model_info(card: ModelCard, model_id: str | None = None) -> dict[str, Any]:
    """`card` as a ModelInfo, listed under `model_id` (an id that resolves to it) or its own id."""
    caps = card.capabilities
    return {
        "type": "model",
        "id": model_id or card.id,
        "display_name": card.display_name,
        "created_at": card.created_at,
        "max_input_tokens": card.context_window,
        "max_tokens": card.max_output_tokens,
        "capabilities": {
            "batch": _supported(True),
            "citations": _supported(False),
            "code_execution": _supported(False),
            "context_management": _supported(False),
            "effort": {
                "supported": False,
                **{level: _supported(False) for level in ("low", "medium", "high", "max")},
            },
            "image_input": _supported(caps.image_input),
            "pdf_input": _supported(caps.pdf_input),
            "structured_outputs": _supported(caps.structured_outputs),
            "thinking": {
                "supported": caps.thinking,
                "types": {"enabled": _supported(caps.thinking), "adaptive": _supported(caps.thinking)},
            },
        },
    }


def page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "data": items,
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `beta=true` and other query noise
    limit: int = Field(default=20, ge=1, le=1000)
    after_id: str | None = None
    before_id: str | None = None


def paginate(items: list[dict[str, Any]], query: ListQuery) -> dict[str, Any]:
    """Cursor pagination over a list ordered newest first: `after_id` pages forward, `before_id` back."""
    ids = [item["id"] for item in items]
    if query.after_id is not None:
        start = ids.index(query.after_id) + 1 if query.after_id in ids else len(ids)
        chosen = items[start : start + query.limit]
        return page(chosen, start + query.limit < len(items))
    if query.before_id is not None:
        end = ids.index(query.before_id) if query.before_id in ids else 0
        start = max(0, end - query.limit)
        return page(items[start:end], start > 0)
    return page(items[: query.limit], query.limit < len(items))
