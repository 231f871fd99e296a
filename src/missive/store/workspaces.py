"""Workspaces: a team's keys, rate-limit tier, monthly spend limit and optional prepaid credit."""

from __future__ import annotations

import secrets

import sqlalchemy as sa

from missive.store.db import api_keys, organization, workspaces
from missive.wire.admin import Organization, Workspace
from missive.wire.ids import new_id
from missive.wire.money import MAX_PICO, MAX_USD
from missive.wire.times import now, utc

DEFAULT_WORKSPACE = "default"
_COLORS = ("#6C5BB9", "#3F7D58", "#C2410C", "#2563EB", "#B45309", "#BE185D", "#0F766E")
_UNSET: object = object()


class WorkspaceError(LookupError):
    """A workspace operation that cannot be done (unknown or archived workspace)."""


def get_organization(db: sa.Engine) -> Organization:
    with db.connect() as conn:
        row = conn.execute(sa.select(organization)).first()
    assert row is not None, "the migrations create the organisation"
    return Organization(row.id, row.name)


def create_workspace(
    db: sa.Engine,
    name: str,
    *,
    rate_limit_tier: str | None = None,
    monthly_spend_limit: int | None = None,
    credit_balance: int | None = None,
) -> Workspace:
    workspace_id = new_id("wrkspc_")
    with db.begin() as conn:
        conn.execute(
            workspaces.insert().values(
                id=workspace_id,
                name=name,
                display_color=secrets.choice(_COLORS),
                created_at=now(),
                rate_limit_tier=rate_limit_tier,
                monthly_spend_limit=monthly_spend_limit,
                credit_balance=credit_balance,
            )
        )
    workspace = get_workspace(db, workspace_id)
    assert workspace is not None
    return workspace


def get_workspace(db: sa.Engine, workspace_id: str) -> Workspace | None:
    with db.connect() as conn:
        row = conn.execute(sa.select(workspaces).where(workspaces.c.id == workspace_id)).first()
    return _workspace(row) if row else None


def list_workspaces(db: sa.Engine, include_archived: bool = False) -> list[Workspace]:
    """Workspaces oldest first."""
    query = sa.select(workspaces).order_by(workspaces.c.created_at, workspaces.c.id)
    if not include_archived:
        query = query.where(workspaces.c.archived_at.is_(None))
    with db.connect() as conn:
        return [_workspace(row) for row in conn.execute(query).all()]


def update_workspace(
    db: sa.Engine,
    workspace_id: str,
    *,
    name: str | None = None,
    rate_limit_tier: object = _UNSET,
    monthly_spend_limit: object = _UNSET,
    credit_balance: object = _UNSET,
) -> Workspace:
    """Change what is given; `None` for the tier, limit or balance clears it."""
    values: dict[str, object] = {}
    if name is not None:
        values["name"] = name
    for column, value in (
        ("rate_limit_tier", rate_limit_tier),
        ("monthly_spend_limit", monthly_spend_limit),
        ("credit_balance", credit_balance),
    ):
        if value is not _UNSET:
            values[column] = value
    _require_open(db, workspace_id)
    if values:
        with db.begin() as conn:
            conn.execute(workspaces.update().where(workspaces.c.id == workspace_id).values(**values))
    workspace = get_workspace(db, workspace_id)
    assert workspace is not None
    return workspace


def add_credit(db: sa.Engine, workspace_id: str, amount: int) -> Workspace:
    """Add prepaid credit (pico-USD), atomically; a workspace without a balance starts one at 0. A balance
    stays at most MAX_PICO, so that it never overflows its column."""
    _require_open(db, workspace_id)
    balance = sa.func.coalesce(workspaces.c.credit_balance, 0)
    with db.begin() as conn:
        added = conn.execute(
            workspaces.update()
            .where(workspaces.c.id == workspace_id, balance <= MAX_PICO - amount)
            .values(credit_balance=balance + amount)
        )
    if added.rowcount == 0:
        raise WorkspaceError(f"the credit balance would exceed the maximum of {MAX_USD:.2f} USD")
    workspace = get_workspace(db, workspace_id)
    assert workspace is not None
    return workspace


def archive_workspace(db: sa.Engine, workspace_id: str) -> Workspace:
    """Archive a workspace and every key in it, for good. The default workspace cannot be archived."""
    if workspace_id == DEFAULT_WORKSPACE:
        raise WorkspaceError("the default workspace cannot be archived")
    _require_open(db, workspace_id)
    with db.begin() as conn:
        conn.execute(workspaces.update().where(workspaces.c.id == workspace_id).values(archived_at=now()))
        conn.execute(
            api_keys.update()
            .where(api_keys.c.workspace_id == workspace_id, api_keys.c.archived_at.is_(None))
            .values(archived_at=now())
        )
    workspace = get_workspace(db, workspace_id)
    assert workspace is not None
    return workspace


def _require_open(db: sa.Engine, workspace_id: str) -> Workspace:
    workspace = get_workspace(db, workspace_id)
    if workspace is None:
        raise WorkspaceError(f"no workspace {workspace_id}")
    if workspace.archived_at is not None:
        raise WorkspaceError(f"workspace {workspace_id} is archived")
    return workspace


def _workspace(row: sa.Row) -> Workspace:  # type: ignore[type-arg]
    return workspace_from_row(row)


def workspace_from_row(row: sa.Row, prefix: str = "") -> Workspace:  # type: ignore[type-arg]
    """A workspace from a row whose columns carry `prefix` (as in a join)."""
    value = row._mapping
    return Workspace(
        value[prefix + "id"],
        value[prefix + "name"],
        value[prefix + "display_color"],
        utc(value[prefix + "created_at"]),  # type: ignore[arg-type]
        utc(value[prefix + "archived_at"]),
        value[prefix + "rate_limit_tier"],
        value[prefix + "monthly_spend_limit"],
        value[prefix + "credit_balance"],
    )
