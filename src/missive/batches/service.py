"""The Message Batches API's operations, for the routes and the CLI: synchronous (run them in a
thread), scoped to a workspace (None: the operator's view of every workspace)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from missive.settings import BatchSettings
from missive.store import batches as store
from missive.wire.batches import Batch, batch_object, parse_create, result_line
from missive.wire.errors import ApiError, invalid, not_found
from missive.wire.ids import new_id
from missive.wire.models import ListQuery, paginate
from missive.wire.times import now

UrlFor = Callable[[str], str]  # batch id -> its results URL
_RESULTS_PAGE = 500


def create(
    db: sa.Engine, settings: BatchSettings, key_id: str, workspace_id: str, version: str, betas: tuple[str, ...],
    body: bytes,
) -> Batch:  # fmt: skip
    """Check the create body and store the batch, queued. Each request gets an id of its own: its
    request id in logs and its ledger record id."""
    items = parse_create(body, settings.max_requests)
    created = now()
    batch = Batch(
        id=new_id("msgbatch_"),
        workspace_id=workspace_id,
        key_id=key_id,
        version=version,
        betas=betas,
        created_at=created,
        expires_at=created + timedelta(seconds=settings.expires_after),
        ended_at=None,
        cancel_initiated_at=None,
        archived_at=None,
    )
    store.create(db, batch, [(new_id("req_"), custom_id, params) for custom_id, params in items])
    return batch


def find(db: sa.Engine, batch_id: str, workspace_id: str | None) -> Batch:
    batch = store.get(db, batch_id, workspace_id)
    if batch is None:
        raise not_found(f"message_batch_id: no message batch with id '{batch_id}'")
    return batch


def view(db: sa.Engine, batch: Batch, url_for: UrlFor) -> dict[str, Any]:
    return batch_object(batch, store.counts(db, [batch.id])[batch.id], url_for(batch.id))


def list_page(db: sa.Engine, workspace_id: str | None, query: ListQuery, url_for: UrlFor) -> dict[str, Any]:
    found = store.list_batches(db, workspace_id)
    by_id = {batch.id: batch for batch in found}
    page = paginate([{"id": batch.id} for batch in found], query)
    counts = store.counts(db, [item["id"] for item in page["data"]])
    page["data"] = [batch_object(by_id[item["id"]], counts[item["id"]], url_for(item["id"])) for item in page["data"]]
    return page


def cancel(db: sa.Engine, batch_id: str, workspace_id: str | None) -> Batch:
    """Queued requests are canceled at once; running ones finish and keep their results."""
    batch = find(db, batch_id, workspace_id)
    if batch.ended_at is None:
        store.cancel(db, batch.id)
    return find(db, batch_id, workspace_id)


def delete(db: sa.Engine, batch_id: str, workspace_id: str | None) -> dict[str, str]:
    batch = find(db, batch_id, workspace_id)
    if batch.ended_at is None:
        raise invalid(
            f"message_batch_id: batch '{batch_id}' is still {batch.processing_status} and cannot be deleted "
            "until it has ended; cancel it first"
        )
    store.delete(db, batch.id)
    return {"id": batch.id, "type": "message_batch_deleted"}


def results(db: sa.Engine, batch_id: str, workspace_id: str | None) -> Iterator[bytes]:
    """The results as JSONL lines, in the batch's order, read a page at a time. Refuses (before the
    first line) a batch that has not ended or whose results were purged."""
    batch = find(db, batch_id, workspace_id)
    if batch.ended_at is None:
        raise invalid(
            f"message_batch_id: batch '{batch_id}' is still {batch.processing_status}; its results are "
            "available once it has ended"
        )
    if batch.archived_at is not None:
        raise ApiError(404, f"message_batch_id: the results of batch '{batch_id}' are no longer available")
    return _lines(db, batch.id)


def _lines(db: sa.Engine, batch_id: str) -> Iterator[bytes]:
    after = -1
    while rows := store.results(db, batch_id, after, _RESULTS_PAGE):
        for position, custom_id, status, result in rows:
            yield result_line(custom_id, status, result)
            after = position


def progress(db: sa.Engine, batch_ids: list[str]) -> dict[str, dict[str, int]]:
    """Each batch's requests by status as the worker has them (queued, running, succeeded, ...): the
    console's progress, which the MessageBatch object shows only once the batch has ended."""
    return store.counts(db, batch_ids)
