"""The Admin API's operations (spec §1.4), as one admin key may do them, on the store.

An admin key of the whole organisation sees everything. An admin key scoped to a workspace (a team's
administrator) sees and manages only that workspace: its keys, its usage, its cost; other workspaces'
objects are 404 to it, and it cannot create, change or archive workspaces.

Each operation takes parsed, range-checked params (wire/admin_params.py), is synchronous as the store
is (routes run it in a thread), and answers the response object or raises an ApiError.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from missive.gateway.spend import month_start
from missive.store import keys as key_store
from missive.store import ledger as ledger_store
from missive.store import reports as report_store
from missive.store import workspaces as workspace_store
from missive.wire import reports
from missive.wire.admin import AdminKey, ApiKey, Workspace, api_key_json, organization_json, workspace_json
from missive.wire.admin_params import KeyCreate, KeyListQuery, KeyUpdate, WorkspaceCreate, WorkspaceUpdate
from missive.wire.errors import ApiError, invalid, not_found

Json = dict[str, Any]


@dataclass(frozen=True)
class Admin:
    db: sa.Engine
    key: AdminKey
    tiers: Collection[str]  # the configured rate-limit tiers

    # --- the organisation and its workspaces

    def organization(self) -> Json:
        return organization_json(workspace_store.get_organization(self.db))

    def workspaces(self, include_archived: bool) -> list[Json]:
        found = workspace_store.list_workspaces(self.db, include_archived)
        return [self._workspace_json(ws) for ws in found if self._visible(ws.id)]

    def workspace(self, workspace_id: str) -> Json:
        return self._workspace_json(self._find_workspace(workspace_id))

    def create_workspace(self, body: WorkspaceCreate) -> Json:
        self._org_only()
        self._check_tier(body.rate_limit_tier)
        workspace = workspace_store.create_workspace(
            self.db,
            body.name,
            rate_limit_tier=body.rate_limit_tier,
            monthly_spend_limit=body.monthly_spend_limit,
            credit_balance=body.credit_balance,
        )
        return self._workspace_json(workspace)

    def update_workspace(self, workspace_id: str, body: WorkspaceUpdate) -> Json:
        workspace = self._find_workspace(workspace_id)
        self._org_only()
        changes = {name: getattr(body, name) for name in body.model_fields_set - {"name"}}  # a null clears
        self._check_tier(changes.get("rate_limit_tier"))
        try:
            updated = workspace_store.update_workspace(self.db, workspace.id, name=body.name, **changes)
        except workspace_store.WorkspaceError as exc:
            raise invalid(str(exc)) from None
        return self._workspace_json(updated)

    def archive_workspace(self, workspace_id: str) -> Json:
        workspace = self._find_workspace(workspace_id)
        self._org_only()
        try:
            archived = workspace_store.archive_workspace(self.db, workspace.id)
        except workspace_store.WorkspaceError as exc:
            raise invalid(str(exc)) from None
        return self._workspace_json(archived)

    # --- API keys

    def keys(self, query: KeyListQuery) -> list[Json]:
        """Newest first."""
        if self.key.workspace_id and query.workspace_id not in (None, self.key.workspace_id):
            return []
        found = key_store.list_keys(self.db, self.key.workspace_id or query.workspace_id)
        return [api_key_json(key) for key in reversed(found) if query.status in (None, key.status)]

    def api_key(self, key_id: str) -> Json:
        return api_key_json(self._find_key(key_id))

    def create_key(self, body: KeyCreate) -> Json:
        """Missive's addition (the Claude API creates keys in its console): the secret is in `key`, once."""
        if not self._visible(body.workspace_id):
            raise not_found(f"workspace {body.workspace_id} not found")
        try:
            key, secret = key_store.create_key(
                self.db, body.name, body.workspace_id, expires_at=body.expires_at, created_by=self.key.id
            )
        except key_store.KeyStateError as exc:
            raise invalid(str(exc)) from None
        return {**api_key_json(key), "key": secret}

    def update_key(self, key_id: str, body: KeyUpdate) -> Json:
        key = self._find_key(key_id)
        try:
            updated = key_store.update_key(self.db, key.id, name=body.name, status=body.status)
        except key_store.KeyStateError as exc:
            raise invalid(str(exc)) from None
        return api_key_json(updated)

    # --- usage and cost

    def usage_report(self, win: reports.Window, group_by: list[str], filters: dict[str, list[str]]) -> Json:
        rows = self._summed(win, group_by, filters, ledger_store.TOKEN_COLUMNS)
        return reports.usage_report(win, rows, group_by)

    def cost_report(self, win: reports.Window, group_by: list[str], filters: dict[str, list[str]]) -> Json:
        columns = [name for name in ("workspace_id",) if name in group_by]
        sums: tuple[str, ...] = ("cost",)
        if "description" in group_by:
            columns += ["model", "service_tier"]
            sums = ledger_store.COST_COLUMNS
        return reports.cost_report(win, self._summed(win, columns, filters, sums), group_by)

    def last_used(self, since_ts: int) -> dict[str, int]:
        """Key id -> the start (epoch seconds) of its latest request since `since_ts`, in what this key sees.
        Missive's addition, for the console's key list."""
        return report_store.last_used(self.db, since_ts, self.key.workspace_id)

    # --- what this key may see

    def _summed(
        self, win: reports.Window, columns: list[str], filters: dict[str, list[str]], sums: tuple[str, ...]
    ) -> list[Json]:
        own = self.key.workspace_id
        if own is not None:  # a workspace's admin sees its own usage and nothing else
            if filters.get("workspace_id") and own not in filters["workspace_id"]:
                return []
            filters = {**filters, "workspace_id": [own]}
        return report_store.summed(self.db, win.start, win.end, win.width, columns, filters, sums)

    def _visible(self, workspace_id: str | None) -> bool:
        return self.key.workspace_id is None or self.key.workspace_id == workspace_id

    def _org_only(self) -> None:
        if self.key.workspace_id is not None:
            raise ApiError(403, "This admin key is scoped to one workspace and cannot manage workspaces.")

    def _check_tier(self, tier: str | None) -> None:
        if tier is not None and tier not in self.tiers:
            shown = tier if len(tier) <= 40 else tier[:40] + "..."
            known = ", ".join(sorted(self.tiers))
            raise invalid(f"rate_limit_tier: unknown tier `{shown}`; configured: {known}")

    def _find_workspace(self, workspace_id: str) -> Workspace:
        found = None if "\x00" in workspace_id else workspace_store.get_workspace(self.db, workspace_id)
        if found is None or not self._visible(workspace_id):
            raise not_found(f"workspace {workspace_id} not found")
        return found

    def _find_key(self, key_id: str) -> ApiKey:
        found = None if "\x00" in key_id else key_store.get_key(self.db, key_id)
        if found is None or not self._visible(found.workspace_id):
            raise not_found(f"api key {key_id} not found")
        return found

    def _workspace_json(self, workspace: Workspace) -> Json:
        start = int(month_start(datetime.now(UTC)).timestamp())
        return workspace_json(workspace, ledger_store.spend_since(self.db, workspace.id, start))
