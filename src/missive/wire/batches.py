"""Message batches on the wire (spec §13): the create body, the `MessageBatch` object and result lines.

The create call checks the batch's own shape (ids unique and well formed, params objects, the size
limits); each request's params are checked when it runs, by the same pipeline as `/v1/messages`, and
a fault there is that request's `errored` result, as on the Claude API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from missive.wire.errors import ApiError, invalid
from missive.wire.requests import first_error_message
from missive.wire.times import rfc3339

CUSTOM_ID_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
# A request's states: queued -> running -> one of RESULTS (store/batches.py moves it)
QUEUED, RUNNING = "queued", "running"
SUCCEEDED, ERRORED, CANCELED, EXPIRED = "succeeded", "errored", "canceled", "expired"
PENDING = (QUEUED, RUNNING)
RESULTS = (SUCCEEDED, ERRORED, CANCELED, EXPIRED)


@dataclass(frozen=True)
class Batch:
    id: str
    workspace_id: str
    key_id: str  # its creator's: its requests run as that key
    version: str  # the anthropic-version and betas of the create call, for each of its requests
    betas: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    cancel_initiated_at: datetime | None
    archived_at: datetime | None

    @property
    def processing_status(self) -> str:
        return "ended" if self.ended_at else "canceling" if self.cancel_initiated_at else "in_progress"


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    custom_id: str = Field(pattern=CUSTOM_ID_PATTERN)
    params: dict[str, Any]


class _Create(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: list[_Item] = Field(min_length=1)


def parse_create(body: bytes, max_requests: int) -> list[tuple[str, str]]:
    """The batch's requests as `(custom_id, params JSON)`, or the 400 naming the first problem."""
    if not body.strip():
        raise invalid("Request body is empty; expected a JSON object.")
    try:
        parsed = _Create.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None
    if len(parsed.requests) > max_requests:
        raise invalid(f"requests: a batch holds at most {max_requests} requests, not {len(parsed.requests)}")
    seen: set[str] = set()
    for index, item in enumerate(parsed.requests):
        if item.custom_id in seen:
            raise invalid(
                f"requests.{index}.custom_id: custom_id '{item.custom_id}' is already used in this batch; "
                "each request's custom_id must be unique within its batch"
            )
        seen.add(item.custom_id)
    return [(item.custom_id, json.dumps(item.params, ensure_ascii=False)) for item in parsed.requests]


def batch_fault(params: dict[str, Any]) -> ApiError | None:
    """What a batch refuses that `/v1/messages` takes: streaming, and max_tokens 0 (cache pre-warming)."""
    if params.get("stream") is True:
        return invalid("stream: requests in a message batch cannot stream; omit `stream` or set it to false")
    if params.get("max_tokens") == 0:
        return invalid("max_tokens: must be at least 1 in a message batch request")
    return None


def batch_object(batch: Batch, counts: dict[str, int], results_url: str | None) -> dict[str, Any]:
    """The `MessageBatch`. As on the Claude API, every request counts as processing until the batch ends."""
    total = sum(counts.values())
    ended = batch.ended_at is not None
    request_counts = {"processing": 0 if ended else total, **{status: 0 for status in RESULTS}}
    if ended:
        request_counts.update({status: counts.get(status, 0) for status in RESULTS})
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.processing_status,
        "request_counts": request_counts,
        "created_at": rfc3339(batch.created_at),
        "expires_at": rfc3339(batch.expires_at),
        "ended_at": rfc3339(batch.ended_at),
        "cancel_initiated_at": rfc3339(batch.cancel_initiated_at),
        "archived_at": rfc3339(batch.archived_at),
        "results_url": results_url if ended and batch.archived_at is None else None,
    }


def succeeded(message: dict[str, Any]) -> str:
    return json.dumps({"type": SUCCEEDED, "message": message}, ensure_ascii=False)


def errored(error: ApiError) -> str:
    return json.dumps({"type": ERRORED, "error": error.body(None)}, ensure_ascii=False)


def result_line(custom_id: str, status: str, result: str | None) -> bytes:
    """One JSONL line of the results; canceled and expired requests carry no result of their own."""
    if status in (CANCELED, EXPIRED) or result is None:
        result = json.dumps({"type": status})
    return f'{{"custom_id":{json.dumps(custom_id)},"result":{result}}}\n'.encode()
