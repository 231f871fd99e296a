"""The `anthropic-beta` header: a comma-separated list of beta names (spec §2.1).

Every client release adds beta names that no list written today can know, so by default a name we
do not know is accepted and ignored (the caller logs it once). `strict` brings back the Claude API's
400 for unknown names. A request field that a beta gates stays gated by it either way (validate.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from missive.wire.errors import invalid

# The values the newest official SDK enumerates (anthropic 2.16 `AnthropicBetaParam`, GA and beta),
# and those Claude Code 2.1.x sends. GA'd betas are accepted and ignored, as the Claude API does.
KNOWN_BETAS = frozenset(
    """
    computer-use-2024-10-22 computer-use-2025-01-24 computer-use-2025-11-24 output-128k-2025-02-19
    mcp-client-2025-04-04 mcp-client-2025-11-20 mcp-client-2026-09-15 dev-full-thinking-2025-05-14
    interleaved-thinking-2025-05-14 code-execution-2025-05-22 code-execution-2025-08-25 context-1m-2025-08-07
    context-management-2025-06-27 model-context-window-exceeded-2025-08-26 fast-mode-2026-02-01
    output-300k-2026-03-24 user-profiles-2026-03-24 user-profiles-2026-08-18 user-profiles-2026-09-04
    advisor-tool-2026-03-01 managed-agents-2026-04-01 dreaming-2026-04-21 thinking-token-count-2026-05-13
    server-side-fallback-2026-06-01 server-side-fallback-2026-07-01 fallback-credit-2026-06-01
    fallback-credit-2026-07-01 agent-memory-2026-07-22 mid-conversation-tool-changes-2026-07-01
    compact-2026-01-12 compact-2026-09-04 mcp-tunnels-2026-06-22 structured-outputs-2025-11-13
    task-budgets-2026-03-13 thinking-display-updates-2026-08-18 mid-conversation-output-config-2026-07-01
    thinking-binding-controls-2026-08-01 mid-conversation-system-clear-at-2026-08-21 inline-tools-2026-09-15
    ce-plugins-2026-09-01 spend-limit-reads-2026-09-26 telemetry-destinations-2026-08-11 webhooks-2026-10-07
    admin-user-sign-out-2026-10-08 message-threads-2026-08-12 analytics-usage-cost-2026-08-24
    experimental-claude-tag-2026-10-21 message-batches-2024-09-24 prompt-caching-2024-07-31 pdfs-2024-09-25
    token-counting-2024-11-01 token-efficient-tools-2025-02-19 files-api-2025-04-14
    extended-cache-ttl-2025-04-11 skills-2025-10-02 cache-diagnosis-2026-04-07 ce-user-management-2026-07-13
    ce-claude-code-managed-settings-2026-10-06 efs-2026-10-01 user-profiles-billing-2026-10-01
    claude-code-20250219 oauth-2025-04-20 fine-grained-tool-streaming-2025-05-14 effort-2025-11-24
    advanced-tool-use-2025-11-20 tool-search-tool-2025-10-19 tool-examples-2025-10-29 web-search-2025-03-05
    web-fetch-2025-09-10 prompt-caching-scope-2026-01-05 redact-thinking-2026-02-12
    google-managed-data-controls-2026-09-01 mid-conversation-system-2026-04-07 per-turn-control-2026-07-01
    afk-mode-2026-01-31 auto-mode-classifier-2026-07-16 cache-keepalive-2026-09-03 ccr-byoc-2025-07-29
    claude-code-side-query-2026-09-29 context-hint-2026-04-09 dangerous-tool-use-2026-09-03
    environments-2025-11-01 mcp-servers-2025-12-04 program-use-case-ids-2026-09-17
    prompt-caching-evict-2026-05-12 resumption-2026-10-08 structured-outputs-2025-12-15
    subagent-review-2026-11-17 thinking-resumption-2026-07-17 timing-2026-09-09 tool-provenance-2026-10-26
    web-search-results-only-2026-11-15 request-tags-2026-08-21
    """.split()
)


@dataclass(frozen=True)
class Betas:
    """The betas of one request: all of them, and those this server does not know."""

    names: frozenset[str]
    unknown: tuple[str, ...] = ()
    sent: tuple[str, ...] = ()  # in the client's order, once each: what an upstream is sent

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def any_of(self, names: Iterable[str]) -> bool:
        return not self.names.isdisjoint(names)


def parse_betas(header: str | None, strict: bool = False, extra_known: Iterable[str] = ()) -> Betas:
    """The header's names; with `strict`, an unknown name is the Claude API's 400."""
    if not header:
        return Betas(frozenset())
    sent = tuple(dict.fromkeys(value.strip() for value in header.split(",") if value.strip()))
    names = frozenset(sent)
    unknown = tuple(sorted(names - KNOWN_BETAS - set(extra_known)))
    if unknown and strict:
        raise invalid(
            f"Unexpected value(s) `{', '.join(unknown)}` for the `anthropic-beta` header. Please consult our "
            "documentation at platform.claude.com/docs or try again without the header."
        )
    return Betas(names, unknown, sent)
