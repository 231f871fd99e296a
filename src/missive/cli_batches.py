"""`missive batches …`: the operator's view of every workspace's message batches, on the store.

`show` gives the real progress (the API, as the Claude API does, counts every request as processing
until its batch ends); `results` writes the JSONL that the API serves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from missive.cli_platform import DATA_DIR, open_db


def _service() -> Any:
    from missive.batches import service

    return service


def _asked(operation: Any, *args: Any) -> Any:
    """A service operation; its refusal (an unknown batch, one still running) is the command's error."""
    from missive.wire.errors import ApiError

    try:
        return operation(*args)
    except ApiError as error:
        raise click.ClickException(error.message) from None


@click.group()
def batches() -> None:
    """List, inspect, cancel message batches and read their results."""


@batches.command("list")
@click.option("--workspace", "workspace_id", help="Only this workspace's batches.")
@DATA_DIR
@click.pass_context
def batches_list(ctx: click.Context, workspace_id: str | None, data_dir: Path | None) -> None:
    """List batches, newest first: id, status, done/total, created, workspace."""
    from missive.store import batches as store
    from missive.wire.batches import RESULTS

    db = open_db(ctx, data_dir)
    found = store.list_batches(db, workspace_id)
    counts = store.counts(db, [batch.id for batch in found])
    for batch in found:
        mine = counts[batch.id]
        done = sum(mine.get(status, 0) for status in RESULTS)
        click.echo(
            f"{batch.id}  {batch.processing_status:<11} {done:>6}/{sum(mine.values()):<6} "
            f"{batch.created_at:%Y-%m-%d %H:%M}  {batch.workspace_id}"
        )


@batches.command("show")
@click.argument("batch_id")
@DATA_DIR
@click.pass_context
def batches_show(ctx: click.Context, batch_id: str, data_dir: Path | None) -> None:
    """Show a batch as the API does, and its requests by state now (the real progress)."""
    from missive.store import batches as store

    db = open_db(ctx, data_dir)
    service = _service()
    batch = _asked(service.find, db, batch_id, None)
    shown = service.view(db, batch, lambda _: f"/v1/messages/batches/{batch_id}/results")
    shown["workspace_id"] = batch.workspace_id
    shown["requests_now"] = store.counts(db, [batch.id])[batch.id]
    click.echo(json.dumps(shown, indent=2))


@batches.command("cancel")
@click.argument("batch_id")
@DATA_DIR
@click.pass_context
def batches_cancel(ctx: click.Context, batch_id: str, data_dir: Path | None) -> None:
    """Cancel a batch: its queued requests are canceled at once, running ones finish."""
    db = open_db(ctx, data_dir)
    batch = _asked(_service().cancel, db, batch_id, None)
    click.echo(f"{batch.id} {batch.processing_status}")


@batches.command("results")
@click.argument("batch_id")
@DATA_DIR
@click.pass_context
def batches_results(ctx: click.Context, batch_id: str, data_dir: Path | None) -> None:
    """Write the results, one JSON line per request, to stdout."""
    db = open_db(ctx, data_dir)
    lines = _asked(_service().results, db, batch_id, None)
    for line in lines:
        sys.stdout.buffer.write(line)
    sys.stdout.flush()
