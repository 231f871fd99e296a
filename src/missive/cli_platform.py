"""`missive keys …` and `missive workspaces …`: the platform's objects, straight on the store.

Every command opens the configured database (`database_url`, or SQLite in the data directory) and
migrates it first, so the CLI works before the server ever started. Secrets are printed once, on
stdout, alone on the last line; everything else goes to stderr or shows only a key's hint.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import sqlalchemy as sa

from missive.settings import Settings, load_settings

DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Where state lives."
)


def settings_from(ctx: click.Context, **overrides: object) -> Settings:
    """The settings, with the `--config` of `missive` and a command's flags."""
    config = ctx.obj.get("config")
    if config:
        os.environ["MISSIVE_CONFIG"] = str(config)
    try:
        return load_settings(**overrides)
    except Exception as exc:  # a bad config file or variable: say which, without a traceback
        raise click.ClickException(f"invalid settings: {exc}") from None


def open_db(ctx: click.Context, data_dir: Path | None) -> sa.Engine:
    from missive.store.db import connect

    settings = settings_from(ctx, data_dir=data_dir)
    try:
        return connect(settings.database)
    except sa.exc.OperationalError as exc:
        raise click.ClickException(f"cannot open the database: {exc.orig}") from None


def _usd(value: str | None) -> int | None:
    from missive.wire.money import parse_usd

    if value is None or value.lower() == "none":
        return None
    try:
        return parse_usd(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}") from None


def _show_usd(amount: int | None) -> str:
    from missive.wire.money import pico_to_usd

    return "-" if amount is None else f"${pico_to_usd(amount)}"


@click.group()
def keys() -> None:
    """Create, list, rename, disable and archive API keys (and admin keys)."""


@keys.command("create")
@click.option("--name", required=True, help="A name to recognise the key by.")
@click.option(
    "--workspace", "workspace_id", default="default", show_default=True, help="The key's workspace."
)
@click.option(
    "--expires-in", type=click.IntRange(1, 36500), help="Days until the key expires (default: never)."
)
@click.option(
    "--admin",
    is_flag=True,
    help="An admin key for the Admin API instead (of the whole organisation, "
    "or of --workspace only if one is given).",
)
@DATA_DIR
@click.pass_context
def keys_create(
    ctx: click.Context,
    name: str,
    workspace_id: str,
    expires_in: int | None,
    admin: bool,
    data_dir: Path | None,
) -> None:
    """Create a key and print it. It is shown only this once; only its hash is stored."""
    from missive.store.keys import KeyStateError, create_admin_key, create_key

    db = open_db(ctx, data_dir)
    scope = ctx.get_parameter_source("workspace_id") != click.core.ParameterSource.DEFAULT
    try:
        if admin:
            key, secret = create_admin_key(db, name, workspace_id if scope else None)
            where = f"workspace {workspace_id}" if scope else "the organisation"
            click.echo(
                f"created admin key {key.id} ({key.name}) for {where}; copy it now, it is not shown again:",
                err=True,
            )
        else:
            expires = datetime.now(UTC) + timedelta(days=expires_in) if expires_in else None
            api_key, secret = create_key(db, name, workspace_id, expires_at=expires)
            click.echo(
                f"created {api_key.id} ({api_key.name}) in {workspace_id}; copy the key now, it is not shown "
                "again:",
                err=True,
            )
    except KeyStateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(secret)


@keys.command("list")
@click.option("--workspace", "workspace_id", help="Only this workspace's keys.")
@click.option("--admin", is_flag=True, help="List admin keys instead.")
@DATA_DIR
@click.pass_context
def keys_list(ctx: click.Context, workspace_id: str | None, admin: bool, data_dir: Path | None) -> None:
    """List keys by hint (the secrets are not stored): id, hint, status, created, workspace, name."""
    from missive.store.keys import list_admin_keys, list_keys

    db = open_db(ctx, data_dir)
    if admin:
        for admin_key in list_admin_keys(db):
            state = "inactive" if admin_key.disabled_at else "active"
            scope = admin_key.workspace_id or "(organisation)"
            click.echo(
                f"{admin_key.id}  {admin_key.hint:<34} {state:<9} {admin_key.created_at:%Y-%m-%d %H:%M}  "
                f"{scope}  {admin_key.name}"
            )
        return
    for key in list_keys(db, workspace_id):
        expires = f" expires {key.expires_at:%Y-%m-%d}" if key.expires_at else ""
        click.echo(
            f"{key.id}  {key.hint:<28} {key.status:<9} {key.created_at:%Y-%m-%d %H:%M}  "
            f"{key.workspace_id}{expires}  {key.name}"
        )


def _set_status(ctx: click.Context, key_id: str, status: str, data_dir: Path | None) -> None:
    from missive.store.keys import KeyStateError, disable_admin_key, update_key

    db = open_db(ctx, data_dir)
    if key_id.startswith("admkey_"):
        if status != "inactive" or not disable_admin_key(db, key_id):
            raise click.ClickException(f"no active admin key {key_id} (admin keys can only be disabled)")
        click.echo(f"disabled {key_id}")
        return
    try:
        update_key(db, key_id, status=status)
    except KeyStateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo({"inactive": "disabled", "active": "enabled", "archived": "archived"}[status] + f" {key_id}")


@keys.command("disable")
@click.argument("key_id")
@DATA_DIR
@click.pass_context
def keys_disable(ctx: click.Context, key_id: str, data_dir: Path | None) -> None:
    """Disable a key at once: its next request gets 401, on every front end."""
    _set_status(ctx, key_id, "inactive", data_dir)


@keys.command("enable")
@click.argument("key_id")
@DATA_DIR
@click.pass_context
def keys_enable(ctx: click.Context, key_id: str, data_dir: Path | None) -> None:
    """Enable a disabled key again."""
    _set_status(ctx, key_id, "active", data_dir)


@keys.command("archive")
@click.argument("key_id")
@DATA_DIR
@click.pass_context
def keys_archive(ctx: click.Context, key_id: str, data_dir: Path | None) -> None:
    """Retire a key for good (it cannot be enabled again)."""
    _set_status(ctx, key_id, "archived", data_dir)


@keys.command("rename")
@click.argument("key_id")
@click.argument("name")
@DATA_DIR
@click.pass_context
def keys_rename(ctx: click.Context, key_id: str, name: str, data_dir: Path | None) -> None:
    """Give a key a new name."""
    from missive.store.keys import KeyStateError, update_key

    try:
        update_key(open_db(ctx, data_dir), key_id, name=name)
    except KeyStateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"renamed {key_id} to {name}")


@click.group()
def workspaces() -> None:
    """Create, list, change and archive workspaces: a team's keys, rate-limit tier and budget."""


_TIER = click.option(
    "--tier", help="Rate-limit tier, from settings' rate_limits.tiers ('none' for the default)."
)
_LIMIT = click.option("--spend-limit", help="Monthly spend limit in USD ('none' for no limit).")
_CREDIT = click.option("--credit", help="Prepaid credit balance in USD ('none' for post-paid).")


def _tier(ctx: click.Context, tier: str | None) -> str | None:
    if tier is None or tier.lower() == "none":
        return None
    tiers = settings_from(ctx).rate_limits.tiers
    if tier not in tiers:
        raise click.BadParameter(f"unknown tier {tier!r}; configured: {', '.join(sorted(tiers))}")
    return tier


@workspaces.command("create")
@click.argument("name")
@_TIER
@_LIMIT
@_CREDIT
@DATA_DIR
@click.pass_context
def workspaces_create(
    ctx: click.Context,
    name: str,
    tier: str | None,
    spend_limit: str | None,
    credit: str | None,
    data_dir: Path | None,
) -> None:
    """Create a workspace and print its id."""
    from missive.store.workspaces import create_workspace

    workspace = create_workspace(
        open_db(ctx, data_dir),
        name,
        rate_limit_tier=_tier(ctx, tier),
        monthly_spend_limit=_usd(spend_limit),
        credit_balance=_usd(credit),
    )
    click.echo(f"created workspace {workspace.name}:", err=True)
    click.echo(workspace.id)


@workspaces.command("list")
@click.option("--all", "include_archived", is_flag=True, help="Include archived workspaces.")
@DATA_DIR
@click.pass_context
def workspaces_list(ctx: click.Context, include_archived: bool, data_dir: Path | None) -> None:
    """List workspaces: id, tier, spend this month / limit, credit, name."""
    from missive.gateway.spend import month_start
    from missive.store.ledger import spend_since
    from missive.store.workspaces import list_workspaces

    db = open_db(ctx, data_dir)
    since = int(month_start(datetime.now(UTC)).timestamp())
    for ws in list_workspaces(db, include_archived):
        spent = spend_since(db, ws.id, since)
        archived = " (archived)" if ws.archived_at else ""
        click.echo(
            f"{ws.id:<32} tier={ws.rate_limit_tier or 'default':<10} spent={_show_usd(spent)}"
            f"/{_show_usd(ws.monthly_spend_limit)} credit={_show_usd(ws.credit_balance)}  {ws.name}{archived}"
        )


@workspaces.command("update")
@click.argument("workspace_id")
@click.option("--name", help="A new name.")
@_TIER
@_LIMIT
@_CREDIT
@DATA_DIR
@click.pass_context
def workspaces_update(
    ctx: click.Context,
    workspace_id: str,
    name: str | None,
    tier: str | None,
    spend_limit: str | None,
    credit: str | None,
    data_dir: Path | None,
) -> None:
    """Change a workspace's name, tier, monthly spend limit or credit balance (what is given)."""
    from missive.store.workspaces import WorkspaceError, update_workspace

    changes: dict[str, object] = {}
    if tier is not None:
        changes["rate_limit_tier"] = _tier(ctx, tier)
    if spend_limit is not None:
        changes["monthly_spend_limit"] = _usd(spend_limit)
    if credit is not None:
        changes["credit_balance"] = _usd(credit)
    try:
        update_workspace(open_db(ctx, data_dir), workspace_id, name=name, **changes)  # type: ignore[arg-type]
    except WorkspaceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"updated {workspace_id}")


@workspaces.command("add-credit")
@click.argument("workspace_id")
@click.argument("usd")
@DATA_DIR
@click.pass_context
def workspaces_add_credit(ctx: click.Context, workspace_id: str, usd: str, data_dir: Path | None) -> None:
    """Add prepaid credit (USD) to a workspace's balance, atomically."""
    from missive.store.workspaces import WorkspaceError, add_credit

    amount = _usd(usd)
    if amount is None:
        raise click.BadParameter("give an amount in USD")
    try:
        workspace = add_credit(open_db(ctx, data_dir), workspace_id, amount)
    except WorkspaceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{workspace_id} credit balance: {_show_usd(workspace.credit_balance)}")


@workspaces.command("archive")
@click.argument("workspace_id")
@DATA_DIR
@click.pass_context
def workspaces_archive(ctx: click.Context, workspace_id: str, data_dir: Path | None) -> None:
    """Archive a workspace and all its keys, for good."""
    from missive.store.workspaces import WorkspaceError, archive_workspace

    try:
        archive_workspace(open_db(ctx, data_dir), workspace_id)
    except WorkspaceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"archived {workspace_id}")
