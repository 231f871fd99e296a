"""What a client may send to the Admin API (spec §1.4): bodies and list queries. Values are range-checked
where they are parsed, so that one the store cannot hold (NUL, an amount past `MAX_USD`, a datetime
past the year 9998) is a 400 that names the field, before any operation runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from missive.wire.models import ListQuery
from missive.wire.money import parse_usd
from missive.wire.times import in_range


def _usd(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PydanticCustomError("usd_type", 'Input should be a string of USD, e.g. "100.00"')
    try:
        return parse_usd(value)
    except ValueError as exc:
        raise PydanticCustomError("usd", str(exc)) from None


def _moment(value: datetime) -> datetime:
    try:
        return in_range(value)
    except ValueError as exc:
        raise PydanticCustomError("datetime_range", str(exc)) from None


Usd = Annotated[int | None, BeforeValidator(_usd)]  # pico-USD once parsed
Moment = Annotated[datetime, AfterValidator(_moment)]  # UTC once parsed


class _NoNul(BaseModel):
    """No string may hold a NUL, which PostgreSQL cannot store."""

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise PydanticCustomError("string_nul", "String should not contain NUL characters")
        return value


class _Body(_NoNul):
    model_config = ConfigDict(extra="forbid")


class WorkspaceCreate(_Body):
    name: str = Field(min_length=1, max_length=40)
    rate_limit_tier: str | None = None
    monthly_spend_limit: Usd = Field(default=None, description='USD, e.g. "100.00"')
    credit_balance: Usd = Field(default=None, description="USD of prepaid credit")


class WorkspaceUpdate(_Body):
    """What is given changes; an explicit null clears the tier, the limit or the balance."""

    name: str | None = Field(default=None, min_length=1, max_length=40)
    rate_limit_tier: str | None = None
    monthly_spend_limit: Usd = None
    credit_balance: Usd = None


class KeyCreate(_Body):
    name: str = Field(min_length=1, max_length=500)
    workspace_id: str = "default"
    expires_at: Moment | None = None


class KeyUpdate(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=500)
    status: Literal["active", "inactive", "archived"] | None = None


class WorkspaceListQuery(_NoNul, ListQuery):
    include_archived: bool = False


class KeyListQuery(_NoNul, ListQuery):
    workspace_id: str | None = None
    status: Literal["active", "inactive", "archived", "expired"] | None = None
