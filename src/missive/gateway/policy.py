"""The per-request policy path, in one place: spend, rate limits, the ledger.

    principal (auth) -> Policy.admit (spend guards, buckets) -> Admission.open (ledger record, as the
    engine is asked) -> Admission.track -> settle

The pipeline calls `admit` once the engine has counted the prompt and before it takes a slot, and
`add_rate_headers` on errors, so that every response of the model routes carries the rate-limit headers.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from missive.gateway.admission import Admission
from missive.gateway.auth import Principal
from missive.gateway.ledger import Ledger
from missive.gateway.limits import Limiter, Pool, Verdict
from missive.gateway.pricing import Pricing
from missive.gateway.spend import SpendGuard
from missive.settings import Settings
from missive.store.ledger import Record
from missive.wire.errors import ApiError

log = logging.getLogger("missive.policy")


class Policy:
    def __init__(self, settings: Settings, db: sa.Engine, limiter: Limiter | None = None) -> None:
        self.settings = settings
        self.db = db
        self.pricing = Pricing(settings.pricing)
        self.limiter = limiter or Limiter.from_settings(settings.rate_limits)
        self.ledger = Ledger(db, settings.ledger, self.pricing)
        self.spend = SpendGuard(db)

    async def start(self) -> None:
        """Announce this front end and settle what dead ones left in flight."""
        await self.ledger.tick()

    async def close(self) -> None:
        await self.ledger.close()
        await self.limiter.close()

    def pool(self, principal: Principal, model: str | None) -> Pool:
        tier = principal.workspace.rate_limit_tier if principal.workspace else None
        return self.limiter.pool(principal.workspace_id, tier, model or self.settings.default_model)

    async def admit(
        self,
        principal: Principal,
        model: str,
        requested_model: str,
        input_tokens: int,
        max_tokens: int,
        request_id: str,
        service_tier: str = "standard",
    ) -> Admission:
        """Let the request through (spend, RPM, ITPM on `input_tokens`, OTPM on `max_tokens`) under the
        limits of `model` (the route's id, whichever engine serves it), or raise."""
        if principal.workspace is not None:
            await self.spend.check(principal.workspace)
        pool = self.pool(principal, model)
        output_cap = pool.limits.get("output-tokens", max_tokens)
        charged = {"requests": 1, "input-tokens": input_tokens, "output-tokens": min(max_tokens, output_cap)}
        verdict = await self.limiter.admit(pool, charged)
        if not verdict.granted:
            log.info(
                "%s rate limited: workspace=%s model=%s %s",
                request_id,
                principal.workspace_id,
                model,
                verdict.exceeded,
            )
            raise _rate_limited(verdict, f"for {model}")
        record = Record(
            id=request_id,
            ts=int(time.time()),
            instance_id=self.ledger.instance_id,
            key_id=principal.key_id,
            workspace_id=principal.workspace_id,
            model=model,
            requested_model=requested_model.replace("\x00", "\ufffd")[:256],  # stored as given, but storable
            service_tier=service_tier,
            input_tokens=input_tokens,
        )
        return Admission(self.ledger, self.limiter, self.spend, pool, record, charged, verdict.headers)

    async def admit_count_tokens(self, principal: Principal) -> dict[str, str]:
        """count_tokens' own RPM; returns its headers, or raises 429."""
        tier = principal.workspace.rate_limit_tier if principal.workspace else None
        verdict = await self.limiter.admit(
            self.limiter.count_tokens_pool(principal.workspace_id, tier), {"requests": 1}
        )
        if not verdict.granted:
            raise _rate_limited(verdict, "for token counting")
        return verdict.headers

    async def add_rate_headers(self, error: ApiError, principal: Principal, model: str | None) -> None:
        """Put the current rate-limit headers on an error that has none."""
        if not any(name.startswith("anthropic-ratelimit-") for name in error.headers):
            error.headers.update((await self.limiter.peek(self.pool(principal, model))).headers)

    async def count_tokens_headers(self, error: ApiError, principal: Principal) -> None:
        if not any(name.startswith("anthropic-ratelimit-") for name in error.headers):
            tier = principal.workspace.rate_limit_tier if principal.workspace else None
            pool = self.limiter.count_tokens_pool(principal.workspace_id, tier)
            error.headers.update((await self.limiter.peek(pool)).headers)


def _rate_limited(verdict: Verdict, what: str) -> ApiError:
    return ApiError(
        429,
        f"This request would exceed your workspace's rate limit of {verdict.exceeded} {what}. "
        f"Please retry after {verdict.retry_after} seconds, or reduce the prompt length or max_tokens.",
        headers=verdict.headers,
    )
