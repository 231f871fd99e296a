"""Request bodies of the Messages API as pydantic models (spec §3, §4, §11).

The surface is that of the newest official SDK's types (anthropic 2.16, GA and beta), so that what a
current client may send parses. Every model forbids unknown fields, as the Claude API does, so a typo
comes back as `<dotted.path>: Extra inputs are not permitted`. Unions are tagged by `type`, so the tag
appears in error paths (`tools.0.custom.name`, `messages.0.content.1.image.source.base64.data`).
Fields that exist only behind an `anthropic-beta` value are listed in `BETA_FIELDS` and checked by
validate.py; what each role may hold is checked there too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
)

from missive.wire.errors import invalid

Parsed = TypeVar("Parsed", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheControl(Strict):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None
    scope: str | None = None  # beta: Claude Code marks its static system prompt "global"


def _string_as_blocks(value: Any) -> Any:
    """`content: "hi"` is shorthand for one text block; an empty string is no content at all."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}] if value else []
    return value


# --- citations (echoed back from responses) -------------------------------------------------


class Citation(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class CitationsConfig(Strict):
    enabled: bool | None = None


# --- sources ----------------------------------------------------------------------------------


class Base64ImageSource(Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class UrlSource(Strict):
    type: Literal["url"]
    url: str


class FileSource(Strict):
    type: Literal["file"]
    file_id: str


ImageSource = Annotated[Union[Base64ImageSource, UrlSource, FileSource], Field(discriminator="type")]


class Base64PdfSource(Strict):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSource(Strict):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ContentSource(Strict):
    type: Literal["content"]
    content: str | list[Annotated[Union["TextBlock", "ImageBlock"], Field(discriminator="type")]]


DocumentSource = Annotated[
    Union[Base64PdfSource, PlainTextSource, ContentSource, UrlSource, FileSource], Field(discriminator="type")
]

# --- content blocks ---------------------------------------------------------------------------


class TextBlock(Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[Citation] | None = None


class ImageTransformations(Strict):
    oversized_image: Literal["downsize", "error"] | None = None


class ImageBlock(Strict):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None
    transformations: ImageTransformations | None = None


class DocumentBlock(Strict):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None
    citations: CitationsConfig | None = None
    cache_control: CacheControl | None = None


class SearchResultBlock(Strict):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]
    citations: CitationsConfig | None = None
    cache_control: CacheControl | None = None


class ToolReferenceBlock(Strict):
    type: Literal["tool_reference"]
    tool_name: str
    cache_control: CacheControl | None = None


class Caller(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class BrowserStateBlock(BaseModel):
    """The browser toolset's tab state inside a tool result; shown to the model as JSON."""

    model_config = ConfigDict(extra="allow")
    type: Literal["browser_state"]
    tabs: list[dict[str, Any]]
    cache_control: CacheControl | None = None


class ToolUseBlock(Strict):
    type: Literal["tool_use"]
    id: str = Field(pattern=r"^[a-zA-Z0-9_-]+$")
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: Caller | None = None
    toolset_name: str | None = None


ToolResultContent = Annotated[
    Union[TextBlock, ImageBlock, DocumentBlock, SearchResultBlock, ToolReferenceBlock, BrowserStateBlock],
    Field(discriminator="type"),
]


class ToolResultBlock(Strict):
    type: Literal["tool_result"]
    tool_use_id: str = Field(pattern=r"^[a-zA-Z0-9_-]+$")
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None
    toolset_name: str | None = None


class ThinkingBlock(Strict):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(Strict):
    type: Literal["redacted_thinking"]
    data: str


class ServerToolUseBlock(Strict):
    type: Literal["server_tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: Caller | None = None


class ServerToolResultBlock(Strict):
    """Any `*_tool_result` block that a server tool produced, echoed back."""

    type: Literal[
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
    ]
    tool_use_id: str
    content: Any
    cache_control: CacheControl | None = None
    caller: Caller | None = None


class ContainerUploadBlock(Strict):
    type: Literal["container_upload"]
    file_id: str
    cache_control: CacheControl | None = None


class OpaqueBlock(BaseModel):
    """Blocks of the Claude API's own server features (MCP connector, advisor, compaction, fallback),
    echoed back by a client; parsed so that the refusal names them (engines/prompt.py)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["mcp_tool_use", "mcp_tool_result", "mcp_tool_listing", "advisor_tool_result", "fallback"]
    cache_control: CacheControl | None = None


class CompactionBlock(Strict):
    """A summary that stands for the conversation before it (beta `compact-*`); shown as text."""

    type: Literal["compaction"]
    content: str | None = None
    encrypted_content: str | None = None
    signature: str | None = None
    tool_changes: list[Annotated[Union["ToolAdditionBlock", "ToolRemovalBlock"], Field(discriminator="type")]] | None = None
    cache_control: CacheControl | None = None


# --- tool changes in the middle of a conversation (beta `mid-conversation-tool-changes-*`) ---------


class ToolNameReference(Strict):
    type: Literal["tool_reference"]
    name: str


class McpToolReference(Strict):
    type: Literal["mcp_tool_reference"]
    name: str
    server_name: str


class McpToolsetReference(Strict):
    type: Literal["mcp_toolset_reference"]
    server_name: str


class ToolDefinition(Strict):
    """A tool defined where it is added (beta `inline-tools-*`), instead of in `tools`."""

    type: Literal["tool_definition"]
    definition: "Tool"


ToolChangeTarget = Annotated[
    Union[ToolNameReference, McpToolReference, McpToolsetReference, ToolDefinition], Field(discriminator="type")
]


class ToolAdditionBlock(Strict):
    type: Literal["tool_addition"]
    tool: ToolChangeTarget
    cache_control: CacheControl | None = None


class ToolRemovalBlock(Strict):
    type: Literal["tool_removal"]
    tool: ToolChangeTarget
    cache_control: CacheControl | None = None


ContentBlock = Annotated[
    Union[
        TextBlock,
        ImageBlock,
        DocumentBlock,
        SearchResultBlock,
        ToolUseBlock,
        ToolResultBlock,
        ThinkingBlock,
        RedactedThinkingBlock,
        ServerToolUseBlock,
        ServerToolResultBlock,
        ContainerUploadBlock,
        CompactionBlock,
        OpaqueBlock,
        ToolAdditionBlock,
        ToolRemovalBlock,
    ],
    Field(discriminator="type"),
]


class SystemMessageOutputConfig(Strict):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class MessageParam(Strict):
    """A user, assistant or system message. What each role may hold is checked in validate.py, so that
    error paths stay `messages.N.content.M...` whatever the role."""

    role: Literal["user", "assistant", "system"]
    # Required but for a system message that carries only `output_config` (validate.check_roles).
    content: Annotated[list[ContentBlock], BeforeValidator(_string_as_blocks)] = Field(default_factory=list)
    clear_at: Literal["next_user_message", "never"] | None = None  # system messages only
    output_config: SystemMessageOutputConfig | None = None  # system messages only: this turn's effort


# --- tools ------------------------------------------------------------------------------------


class InputSchema(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["object"]
    properties: dict[str, Any] | None = None
    required: list[str] | None = None


class ToolCommon(Strict):
    cache_control: CacheControl | None = None
    defer_loading: bool | None = None
    strict: bool | None = None
    allowed_callers: list[str] | None = None


class CustomTool(ToolCommon):
    type: Literal["custom"] | None = None
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str | None = None
    input_schema: InputSchema
    input_examples: list[dict[str, Any]] | None = None
    eager_input_streaming: bool | None = None


class BashTool(ToolCommon):
    type: Literal["bash_20250124"]
    name: Literal["bash"]
    input_examples: list[dict[str, Any]] | None = None


class TextEditorTool(ToolCommon):
    type: Literal["text_editor_20250124", "text_editor_20250429", "text_editor_20250728"]
    name: Literal["str_replace_editor", "str_replace_based_edit_tool"]
    max_characters: int | None = Field(default=None, ge=1)
    input_examples: list[dict[str, Any]] | None = None


class MemoryTool(ToolCommon):
    type: Literal["memory_20250818"]
    name: Literal["memory"]
    input_examples: list[dict[str, Any]] | None = None


class ServerTool(BaseModel):
    """Tools that the Claude API runs itself, or that need its computer and browser environments:
    parsed so that the refusal can name them (engines/prompt.py)."""

    model_config = ConfigDict(extra="allow")
    type: str
    name: str | None = None  # toolsets have none


def _tool_tag(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "custom"
    kind = value.get("type")
    if kind in (None, "custom"):
        return "custom"
    if isinstance(kind, str):
        for prefix, tag in _TOOL_PREFIXES:
            if kind.startswith(prefix):
                return tag
    return None


_TOOL_PREFIXES = [
    ("bash_", "bash"),
    ("text_editor_", "text_editor"),
    ("memory_", "memory"),
    ("web_search_", "server"),
    ("web_fetch_", "server"),
    ("code_execution_", "server"),
    ("tool_search_tool_", "server"),
    ("browser_toolset_", "server"),
    ("computer_", "server"),
    ("mcp_toolset", "server"),
    ("advisor_", "server"),
]

Tool = Annotated[
    Union[
        Annotated[CustomTool, Tag("custom")],
        Annotated[BashTool, Tag("bash")],
        Annotated[TextEditorTool, Tag("text_editor")],
        Annotated[MemoryTool, Tag("memory")],
        Annotated[ServerTool, Tag("server")],
    ],
    Discriminator(_tool_tag, custom_error_type="invalid_tool", custom_error_message="Unknown tool type"),
]


class ToolChoiceAuto(Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Strict):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Strict):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Strict):
    type: Literal["none"]


ToolChoice = Annotated[
    Union[ToolChoiceAuto, ToolChoiceAny, ToolChoiceTool, ToolChoiceNone], Field(discriminator="type")
]

# --- thinking and output ----------------------------------------------------------------------


ThinkingDisplay = Literal["summarized", "omitted", "updates"]  # "updates": beta thinking-display-updates


class BlockBinding(Strict):
    prefix_mismatch_behavior: Literal["error", "drop_block"] | None = None


class ThinkingEnabled(Strict):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)
    display: ThinkingDisplay | None = None
    block_binding: BlockBinding | None = None


class ThinkingDisabled(Strict):
    type: Literal["disabled"]


class ThinkingAdaptive(Strict):
    type: Literal["adaptive"]
    display: ThinkingDisplay | None = None
    block_binding: BlockBinding | None = None


class ThinkingBetweenTools(Strict):
    """Think only between tool calls; for a local model the same as adaptive."""

    type: Literal["between_tools"]


Thinking = Annotated[
    Union[ThinkingEnabled, ThinkingDisabled, ThinkingAdaptive, ThinkingBetweenTools], Field(discriminator="type")
]


class JsonOutputFormat(Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class TaskBudget(Strict):
    type: Literal["tokens"]
    total: int = Field(ge=0)
    remaining: int | None = Field(default=None, ge=0)


class OutputConfig(Strict):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonOutputFormat | None = None
    task_budget: TaskBudget | None = None  # beta


class Metadata(Strict):
    user_id: str | None = Field(default=None, max_length=512)


class Diagnostics(Strict):
    previous_message_id: str | None = None


# --- top level --------------------------------------------------------------------------------


class BillingPolicy(Strict):
    type: Literal["billing_policy"]
    bill_to: Literal["self", "user_profile"] | None = None


class ConversationParams(Strict):
    """What `messages.create` and `count_tokens` have in common: the prompt."""

    model: str
    messages: list[MessageParam] = Field(max_length=100_000)
    system: Annotated[list[TextBlock], BeforeValidator(_string_as_blocks)] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    cache_control: CacheControl | None = None
    output_config: OutputConfig | None = None
    speed: Literal["standard", "fast"] | None = None
    # Beta fields: accepted only when their `anthropic-beta` value is sent (BETA_FIELDS, validate.py).
    context_management: dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    billing_policy: BillingPolicy | None = None


class MessageCreateParams(ConversationParams):
    max_tokens: int = Field(ge=0)
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    # A top_k past any vocabulary means no limit. It is kept within a C int, which is what llama.cpp
    # takes: a larger value would wrap around there (2**32 + 5 sampling the top 5 tokens).
    top_k: Annotated[int, AfterValidator(lambda k: min(k, 2**31 - 1))] | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    container: str | dict[str, Any] | None = None
    inference_geo: str | None = None
    diagnostics: Diagnostics | None = None
    # Beta fields, accepted and without effect here: server-side fallback, its credit token, and the
    # safety classifier's context. (Features Missive cannot honour, such as server-kept threads and
    # server-side compaction, are not fields here: they stay "Extra inputs are not permitted".)
    fallbacks: Literal["default"] | list[dict[str, Any]] | None = None
    fallback_credit_token: str | None = None
    safeguards: list[dict[str, Any]] | None = None


class CountTokensParams(ConversationParams):
    pass


def first_error_message(exc: ValidationError) -> str:
    """The Claude API reports one problem, as `<dotted.path>: <message>`."""
    error = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in error["loc"])
    return f"{path}: {error['msg']}" if path else error["msg"]


# Fields that exist only behind an `anthropic-beta` value: (model, field) -> the betas that enable it.
# A `(model, field, value)` key gates one value of an enum. validate.check_beta_fields walks the request.
BETA_FIELDS: dict[tuple[Any, ...], tuple[str, ...]] = {
    (ConversationParams, "context_management"): (
        "context-management-2025-06-27", "compact-2026-01-12", "compact-2026-09-04"
    ),
    (ConversationParams, "mcp_servers"): ("mcp-client-2025-04-04", "mcp-client-2025-11-20", "mcp-client-2026-09-15"),
    (ConversationParams, "billing_policy"): ("user-profiles-billing-2026-10-01",),
    (MessageCreateParams, "fallbacks"): ("server-side-fallback-2026-06-01", "server-side-fallback-2026-07-01"),
    (MessageCreateParams, "fallback_credit_token"): ("fallback-credit-2026-06-01", "fallback-credit-2026-07-01"),
    (MessageCreateParams, "safeguards"): ("dangerous-tool-use-2026-09-03",),
    (MessageParam, "clear_at"): ("mid-conversation-system-clear-at-2026-08-21",),
    (MessageParam, "output_config"): ("per-turn-control-2026-07-01", "mid-conversation-output-config-2026-07-01"),
    (ToolAdditionBlock, "type"): ("mid-conversation-tool-changes-2026-07-01",),
    (ToolRemovalBlock, "type"): ("mid-conversation-tool-changes-2026-07-01",),
    (ToolDefinition, "type"): ("inline-tools-2026-09-15",),
    (CompactionBlock, "type"): ("compact-2026-01-12", "compact-2026-09-04"),
    (CacheControl, "scope"): ("prompt-caching-scope-2026-01-05",),
    (OutputConfig, "task_budget"): ("task-budgets-2026-03-13",),
    (ThinkingEnabled, "block_binding"): ("thinking-binding-controls-2026-08-01",),
    (ThinkingAdaptive, "block_binding"): ("thinking-binding-controls-2026-08-01",),
    (ThinkingEnabled, "display", "updates"): ("thinking-display-updates-2026-08-18",),
    (ThinkingAdaptive, "display", "updates"): ("thinking-display-updates-2026-08-18",),
}  # fmt: skip


def parse_body(body: bytes, model: type[Parsed]) -> Parsed:
    """A JSON body as `model`, or the Claude API's 400 naming the first problem."""
    if not body.strip():
        raise invalid("Request body is empty; expected a JSON object.")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid(first_error_message(exc)) from None
