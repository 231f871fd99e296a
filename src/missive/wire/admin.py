"""The Admin API's objects (spec §1.4): organisation, workspace, API key and admin key, as records (what
the store keeps) and in the Claude API's JSON shapes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from missive.wire.money import pico_to_usd
from missive.wire.times import now, rfc3339


@dataclass(frozen=True)
class Organization:
    id: str
    name: str


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str
    display_color: str
    created_at: datetime
    archived_at: datetime | None
    rate_limit_tier: str | None
    monthly_spend_limit: int | None  # pico-USD; None: no limit
    credit_balance: int | None  # pico-USD; None: no prepaid balance is kept (post-paid)


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    workspace_id: str
    hint: str
    created_at: datetime
    disabled_at: datetime | None
    archived_at: datetime | None = None
    expires_at: datetime | None = None
    created_by: str | None = None

    @property
    def status(self) -> str:
        if self.archived_at:
            return "archived"
        if self.disabled_at:
            return "inactive"
        if self.expires_at and self.expires_at <= now():
            return "expired"
        return "active"


@dataclass(frozen=True)
class AdminKey:
    id: str
    name: str
    workspace_id: str | None  # None: the whole organisation
    hint: str
    created_at: datetime
    disabled_at: datetime | None


def organization_json(org: Organization) -> dict[str, Any]:
    return {"id": org.id, "type": "organization", "name": org.name}


def workspace_json(workspace: Workspace, spent_this_month: int | None = None) -> dict[str, Any]:
    """The Claude API's workspace, plus Missive's policy fields (money as USD decimal strings)."""
    return {
        "id": workspace.id,
        "type": "workspace",
        "name": workspace.name,
        "display_color": workspace.display_color,
        "created_at": rfc3339(workspace.created_at),
        "archived_at": rfc3339(workspace.archived_at),
        "rate_limit_tier": workspace.rate_limit_tier,
        "monthly_spend_limit": _usd(workspace.monthly_spend_limit),
        "credit_balance": _usd(workspace.credit_balance),
        "spent_this_month": _usd(spent_this_month),
    }


def api_key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "type": "api_key",
        "name": key.name,
        "workspace_id": key.workspace_id,
        "created_at": rfc3339(key.created_at),
        "created_by": {
            "id": key.created_by or "missive-cli",
            "type": "admin_key" if key.created_by else "user",
        },
        "partial_key_hint": key.hint,
        "status": key.status,
        "expires_at": rfc3339(key.expires_at),
    }


def _usd(amount: int | None) -> str | None:
    return None if amount is None else pico_to_usd(amount)
