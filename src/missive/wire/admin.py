"""Admin API objects in the Claude API's shapes (spec §1.4): organisation, workspace, API key."""

from __future__ import annotations

from typing import Any

from missive.gateway.pricing import pico_to_usd
from missive.store.keys import ApiKey
from missive.store.times import rfc3339
from missive.store.workspaces import Organization, Workspace


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
