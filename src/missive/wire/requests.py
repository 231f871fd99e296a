"""Request bodies of the Messages API as pydantic models (spec §3, §4, §11).

Every model forbids unknown fields, as the Claude API does, so a typo comes back as
`<dotted.path>: Extra inputs are not permitted`. Unions are tagged by `type`, so the tag appears in
error paths (`tools.0.custom.name`, `messages.0.content.1.image.source.base64.data`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, ValidationError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheControl(Strict):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


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


class ImageBlock(Strict):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None


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


class ToolUseBlock(Strict):
    type: Literal["tool_use"]
    id: str = Field(pattern=r"^[a-zA-Z0-9_-]+$")
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: Caller | None = None


ToolResultContent = Annotated[
    Union[TextBlock, ImageBlock, DocumentBlock, SearchResultBlock, ToolReferenceBlock], Field(discriminator="type")
]


class ToolResultBlock(Strict):
    type: Literal["tool_result"]
    tool_use_id: str = Field(pattern=r"^[a-zA-Z0-9_-]+$")
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


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


class MidConversationSystemBlock(Strict):
    type: Literal["mid_conv_system"]
    content: list[TextBlock]
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
        MidConversationSystemBlock,
    ],
    Field(discriminator="type"),
]


class MessageParam(Strict):
    role: Literal["user", "assistant", "system"]
    content: Annotated[list[ContentBlock], BeforeValidator(_string_as_blocks)]


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
    """Tools that the Claude API runs itself (web search, web fetch, code execution, tool search)."""

    model_config = ConfigDict(extra="allow")
    type: str
    name: str


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


class ThinkingEnabled(Strict):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(Strict):
    type: Literal["disabled"]


class ThinkingAdaptive(Strict):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


Thinking = Annotated[Union[ThinkingEnabled, ThinkingDisabled, ThinkingAdaptive], Field(discriminator="type")]


class JsonOutputFormat(Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Strict):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonOutputFormat | None = None


class Metadata(Strict):
    user_id: str | None = Field(default=None, max_length=512)


class Diagnostics(Strict):
    previous_message_id: str | None = None


# --- top level --------------------------------------------------------------------------------


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
    # Beta fields: accepted only when their `anthropic-beta` value is sent (checked in validate.py).
    context_management: dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = None


class MessageCreateParams(ConversationParams):
    max_tokens: int = Field(ge=0)
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    container: str | dict[str, Any] | None = None
    inference_geo: str | None = None
    speed: Literal["standard", "fast"] | None = None
    diagnostics: Diagnostics | None = None


class CountTokensParams(ConversationParams):
    pass


def first_error_message(exc: ValidationError) -> str:
    """The Claude API reports one problem, as `<dotted.path>: <message>`."""
    error = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in error["loc"])
    return f"{path}: {error['msg']}" if path else error["msg"]
