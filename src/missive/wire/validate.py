"""Rules of the Messages API that a schema cannot express (spec §3.2, §3.3, §3.7–§3.9, §7.1).

`normalize` returns the conversation as the model should see it: consecutive turns of the same role
merged into one, as the Claude API does. Every rule raises a 400 whose text follows the Claude API.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from missive.wire import requests as rq
from missive.wire.betas import Betas
from missive.wire.errors import invalid
from missive.wire.signatures import verify_thinking

SAMPLING_FIELDS = ("temperature", "top_p", "top_k")
MAX_BREAKPOINTS = 4
NEW_VERSION = "2026-10-21"
_SYSTEM_BLOCKS = (rq.TextBlock, rq.ToolAdditionBlock, rq.ToolRemovalBlock)


def _walk(node: object, path: str) -> Iterator[tuple[BaseModel, str]]:
    """Every model in the request, with its dotted path (`messages.1.content.0`)."""
    if isinstance(node, BaseModel):
        yield node, path
        for name in node.model_fields_set:
            yield from _walk(getattr(node, name), f"{path}.{name}" if path else name)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, f"{path}.{index}")


def check_beta_fields(params: rq.ConversationParams, betas: Betas) -> None:
    """A field (or enum value) that only a beta defines is refused without that beta, as on the Claude API."""
    for node, path in _walk(params, ""):
        for key, enabling in rq.BETA_FIELDS.items():
            model, field, *value = key
            if not isinstance(node, model) or field not in node.model_fields_set:
                continue
            actual = getattr(node, field)
            if actual is None or (value and actual != value[0]) or betas.any_of(enabling):
                continue
            if field == "type":  # a whole block type
                raise invalid(f"{path}: `{actual}` blocks need the `anthropic-beta` header `{enabling[0]}`")
            if value:
                raise invalid(f"{path}.{field}: `{actual}` needs the `anthropic-beta` header `{enabling[0]}`")
            raise invalid(f"{path + '.' if path else ''}{field}: Extra inputs are not permitted")


def check_version_rules(params: rq.ConversationParams, version: str) -> None:
    """What API version 2026-10-21 removed: sampling parameters, documents in assistant turns, and
    citations on user text (directly or inside a search result)."""
    if version < NEW_VERSION:
        return
    for field in SAMPLING_FIELDS:
        if getattr(params, field, None) is not None:
            raise invalid(f"{field}: Extra inputs are not permitted")
    for i, message in enumerate(params.messages):
        for j, block in enumerate(message.content):
            path = f"messages.{i}.content.{j}"
            if message.role == "assistant" and isinstance(block, rq.DocumentBlock):
                raise invalid(f"{path}: `document` blocks are not allowed in assistant messages (API version {version})")
            if message.role != "user":
                continue
            texts = [(path, block)] if isinstance(block, rq.TextBlock) else []
            if isinstance(block, rq.SearchResultBlock):
                texts = [(f"{path}.content.{k}", inner) for k, inner in enumerate(block.content)]
            for text_path, text in texts:
                if text.citations:
                    raise invalid(
                        f"{text_path}.citations: citations are not allowed on text in user messages "
                        f"(API version {version})"
                    )


def check_roles(params: rq.ConversationParams) -> None:
    """What each role may hold: system messages take text (and tool changes) and their own fields."""
    for i, message in enumerate(params.messages):
        if message.role != "system":
            if "content" not in message.model_fields_set:
                raise invalid(f"messages.{i}.content: Field required")
            for field in ("clear_at", "output_config"):
                if getattr(message, field) is not None:
                    raise invalid(f"messages.{i}.{field}: only permitted on `system` messages")
            continue
        if not message.content and message.output_config is None:
            raise invalid(f"messages.{i}: a system message needs `content` or `output_config`")
        for j, block in enumerate(message.content):
            if not isinstance(block, _SYSTEM_BLOCKS):
                raise invalid(
                    f"messages.{i}.content.{j}: system messages take only `text`, `tool_addition` and "
                    f"`tool_removal` blocks, not `{block.type}`"
                )


def shown(messages: list[rq.MessageParam]) -> list[rq.MessageParam]:
    """The messages the model sees: without system messages that only set this turn's effort, or whose
    `clear_at: next_user_message` has passed (a later user message exists)."""
    last_user = max((i for i, message in enumerate(messages) if message.role == "user"), default=-1)
    return [
        message
        for i, message in enumerate(messages)
        if message.role != "system"
        or (message.content and not (message.clear_at == "next_user_message" and i < last_user))
    ]


def normalize(params: rq.ConversationParams) -> list[rq.MessageParam]:
    """Check the turns and merge consecutive turns of the same role."""
    if not params.messages:
        raise invalid("messages: at least one message is required")
    last = len(params.messages) - 1
    for i, message in enumerate(params.messages):
        if not message.content and message.role != "system" and not (i == last and message.role == "assistant"):
            raise invalid(
                f"messages.{i}: all messages must have non-empty content except for the optional final "
                "assistant message"
            )
        for block in message.content:
            if isinstance(block, rq.TextBlock) and not block.text:
                raise invalid("messages: text content blocks must be non-empty")
    if params.system:
        for block in params.system:
            if not block.text:
                raise invalid("system: text content blocks must be non-empty")

    merged: list[rq.MessageParam] = []
    for message in shown(params.messages):
        if merged and merged[-1].role == message.role:
            merged[-1] = rq.MessageParam(role=message.role, content=[*merged[-1].content, *message.content])
        else:
            merged.append(message.model_copy())
    if not merged:
        raise invalid("messages: at least one user or assistant message is required")
    final = merged[-1]
    if final.role == "assistant" and final.content:
        tail = final.content[-1]
        if isinstance(tail, rq.TextBlock) and tail.text != tail.text.rstrip():
            raise invalid("final assistant content cannot end with trailing whitespace")
    return merged


def check_generation(params: rq.MessageCreateParams) -> None:
    if params.stop_sequences is not None:
        for stop in params.stop_sequences:
            if not stop.strip():
                raise invalid("stop_sequences: each stop sequence must contain non-whitespace")
    thinking = params.thinking
    if isinstance(thinking, rq.ThinkingEnabled):
        if params.max_tokens <= thinking.budget_tokens:
            raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    if isinstance(thinking, (rq.ThinkingEnabled, rq.ThinkingAdaptive)):
        if params.temperature is not None and params.temperature != 1:
            raise invalid("`temperature` may only be set to 1 when thinking is enabled")
        if params.top_k is not None:
            raise invalid("`top_k` may not be set when thinking is enabled")
        if params.top_p is not None and params.top_p < 0.95:
            raise invalid("`top_p` must be between 0.95 and 1 when thinking is enabled")
        if isinstance(thinking, rq.ThinkingEnabled) and isinstance(
            params.tool_choice, (rq.ToolChoiceAny, rq.ToolChoiceTool)
        ):
            raise invalid("Thinking may not be enabled when tool_choice forces tool use.")


def check_tools(params: rq.ConversationParams) -> None:
    names = [getattr(tool, "name", None) for tool in params.tools or []]
    if len(set(names)) != len(names):
        raise invalid("tools: Tool names must be unique.")
    choice = params.tool_choice
    if isinstance(choice, (rq.ToolChoiceAny, rq.ToolChoiceTool)) and not names:
        raise invalid(f"tool_choice: tool_choice.type `{choice.type}` requires `tools`")
    if isinstance(choice, rq.ToolChoiceTool) and choice.name not in names:
        raise invalid(f"tool_choice.name: tool `{choice.name}` is not one of the tools in `tools`")


def _turns(messages: list[rq.MessageParam]) -> list[tuple[str, list[tuple[int, int, rq.ContentBlock]]]]:
    """Consecutive messages of one role as one turn: (role, [(message index, block index, block)]).

    System messages stand beside the turns, not between them: a tool use is still answered by the
    next user message when a system message comes in between."""
    turns: list[tuple[str, list[tuple[int, int, rq.ContentBlock]]]] = []
    for i, message in enumerate(messages):
        if message.role == "system":
            continue
        blocks = [(i, j, block) for j, block in enumerate(message.content)]
        if turns and turns[-1][0] == message.role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((message.role, blocks))
    return turns


def check_tool_pairing(messages: list[rq.MessageParam]) -> None:
    """Tool uses and results pair up as the Claude API requires (spec §3.3).

    Consecutive messages of one role are one turn, but errors name the indexes the client sent.
    Every `tool_use` of an assistant turn is answered in the next turn, which is a user turn (a final
    assistant turn with tool uses has none); every `tool_result` answers a `tool_use` of the turn
    before; `tool_result` blocks come before anything else in their turn; `tool_use` ids are unique.
    """
    seen: set[str] = set()
    turns = _turns(messages)
    for t, (role, blocks) in enumerate(turns):
        if role == "assistant":
            uses: list[tuple[int, str]] = []  # (message index, id)
            for i, j, block in blocks:
                if isinstance(block, rq.ToolUseBlock):
                    if block.id in seen:
                        raise invalid(f"messages.{i}.content.{j}: `tool_use` ids must be unique")
                    seen.add(block.id)
                    uses.append((i, block.id))
            following = turns[t + 1] if t + 1 < len(turns) else None
            answered = {
                block.tool_use_id
                for _, _, block in (following[1] if following and following[0] == "user" else [])
                if isinstance(block, rq.ToolResultBlock)
            }
            missing = [(i, tool_id) for i, tool_id in uses if tool_id not in answered]
            if missing:
                ids = ", ".join(tool_id for _, tool_id in missing)
                raise invalid(
                    f"messages.{missing[0][0]}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {ids}. Each `tool_use` block must have a corresponding `tool_result` "
                    "block in the next message."
                )
        elif role == "user":
            previous = turns[t - 1] if t > 0 else None
            expected = {
                block.id
                for _, _, block in (previous[1] if previous and previous[0] == "assistant" else [])
                if isinstance(block, rq.ToolUseBlock)
            }
            other_content = False
            for i, j, block in blocks:
                if not isinstance(block, rq.ToolResultBlock):
                    other_content = True
                    continue
                if block.tool_use_id not in expected:
                    raise invalid(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block.tool_use_id}. Each `tool_result` block must have a corresponding `tool_use` "
                        "block in the previous message."
                    )
                if other_content:
                    raise invalid(
                        f"messages.{i}: `tool_result` blocks must come before any other content in the "
                        "message"
                    )


def check_thinking_signatures(messages: list[rq.MessageParam], key: bytes) -> None:
    """Every `thinking` block comes back as Missive signed it (spec §3.3, wire/signatures.py).

    `redacted_thinking` blocks are accepted as they are: their `data` is opaque.
    """
    for i, message in enumerate(messages):
        for j, block in enumerate(message.content):
            if not isinstance(block, rq.ThinkingBlock):
                continue
            if not verify_thinking(key, block.thinking, block.signature):
                raise invalid(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")


def _explicit_breakpoints(params: rq.ConversationParams) -> list[tuple[object, rq.CacheControl]]:
    """(block, cache_control) for every marked block, in prompt order: tools, system, messages."""
    found: list[tuple[object, rq.CacheControl]] = []

    def visit(block: object) -> None:
        cache_control = getattr(block, "cache_control", None)
        if cache_control is not None:
            found.append((block, cache_control))

    for tool in params.tools or []:
        visit(tool)
    for block in params.system or []:
        visit(block)
    for message in params.messages:
        for block in message.content:
            visit(block)
            if isinstance(block, rq.ToolResultBlock) and isinstance(block.content, list):
                for inner in block.content:
                    visit(inner)
    return found


def _last_cacheable_block(params: rq.ConversationParams) -> object | None:
    for message in reversed(params.messages):
        for block in reversed(message.content):
            if not isinstance(block, (rq.ThinkingBlock, rq.RedactedThinkingBlock)):
                return block
    return None


def check_breakpoints(params: rq.ConversationParams) -> None:
    """At most 4 breakpoints (the automatic one included); 1h before 5m; no TTL conflict (spec §8)."""
    explicit = _explicit_breakpoints(params)
    automatic = params.cache_control
    found = len(explicit)
    if automatic is not None:
        last = _last_cacheable_block(params)
        marked = next((cc for block, cc in explicit if block is last), None)
        if marked is None:
            found += 1
        elif (marked.ttl or "5m") != (automatic.ttl or "5m"):
            raise invalid(
                "cache_control: the automatic breakpoint's ttl differs from the ttl of the explicit breakpoint on "
                "the last block"
            )
    if found > MAX_BREAKPOINTS:
        raise invalid(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}.")
    seen_5m = False
    for _, cache_control in explicit:
        ttl = cache_control.ttl or "5m"
        if ttl == "1h" and seen_5m:
            raise invalid("cache_control: a breakpoint with ttl='1h' must not come after one with ttl='5m'")
        seen_5m = seen_5m or ttl == "5m"
