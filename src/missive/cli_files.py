"""`missive files …`: the operator's view of every workspace's uploaded files, on the store and disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import click

from missive.cli_platform import DATA_DIR, open_db, settings_from


def _service(ctx: click.Context, data_dir: Path | None) -> Any:
    from missive.files.service import FileService
    from missive.files.storage import DiskStorage

    settings = settings_from(ctx, data_dir=data_dir)
    return FileService(open_db(ctx, data_dir), settings.files, DiskStorage(settings.files_dir))


def _asked(operation: Any, *args: Any) -> Any:
    """A service operation, run to its end; its refusal (an unknown file) is the command's error."""
    from missive.wire.errors import ApiError

    try:
        return anyio.run(operation, *args)
    except ApiError as error:
        raise click.ClickException(error.message) from None


@click.group()
def files() -> None:
    """List, inspect and delete the files uploaded through the Files API."""


@files.command("list")
@click.option("--workspace", "workspace_id", help="Only this workspace's files.")
@DATA_DIR
@click.pass_context
def files_list(ctx: click.Context, workspace_id: str | None, data_dir: Path | None) -> None:
    """List files, newest first: id, size, created, MIME type, workspace, filename."""
    from missive.store import files as store
    from missive.wire.times import now

    db = _service(ctx, data_dir).db
    after: str | None = None
    while True:
        found, more = store.page(db, workspace_id, now(), 1000, after)
        for record in found:
            click.echo(
                f"{record.id}  {record.size_bytes:>11}  {record.created_at:%Y-%m-%d %H:%M}  "
                f"{record.mime_type:<24} {record.workspace_id}  {record.filename}"
            )
        if not more:
            break
        after = found[-1].id
    count, size = store.totals(db, workspace_id)
    click.echo(f"{count} files, {size} bytes")


@files.command("show")
@click.argument("file_id")
@DATA_DIR
@click.pass_context
def files_show(ctx: click.Context, file_id: str, data_dir: Path | None) -> None:
    """Show a file's metadata as the API does, with its workspace, uploader key and SHA-256."""
    service = _service(ctx, data_dir)
    record = _asked(service.find, None, file_id)
    shown = service.view(record, True)
    shown |= {"workspace_id": record.workspace_id, "key_id": record.key_id, "sha256": record.sha256}
    click.echo(json.dumps(shown, indent=2))


@files.command("delete")
@click.argument("file_id")
@DATA_DIR
@click.pass_context
def files_delete(ctx: click.Context, file_id: str, data_dir: Path | None) -> None:
    """Delete a file: its metadata and its bytes."""
    deleted = _asked(_service(ctx, data_dir).delete, None, file_id)
    click.echo(f"{deleted['id']} deleted")
