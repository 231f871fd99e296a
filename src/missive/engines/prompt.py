"""An Anthropic conversation -> the turns a chat template renders, for models that take text.

Input the model cannot take is refused with a 400 that names the block, never silently dropped.
Thinking blocks of earlier turns are left out, as the Claude API does for previous turns.

Every block's text is followed by `MARK`, so that the engine can find where each block ends in the
rendered prompt (prompt caching works at block boundaries); `ChatPrompt.marks` holds, for each mark
in prompt order, the cache TTL of a breakpoint there, or None. The engine strips the marks.

Tools reach the model in one of these ways, chosen per model (`ToolFormat`):
- Missive's own (most small models' chat templates know no tools): a system section describes the
  tools, and calls are written `<tool_call name="NAME">{input as JSON}</tool_call>`; tool uses and
  results of earlier turns are rendered the same way, so the model sees its own format.
- The model's chat template, when it takes `tools` and writes Hermes-style calls
  (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`, as Qwen and Hermes models do): the
  template gets `tools`, assistant messages with `tool_calls`, and `tool` messages with the results.
- The model's chat template, when it takes `tools` and writes tagged calls with untyped values
  (`TaggedSyntax`): Qwen3-Coder / Qwen3.5 `<tool_call><function=NAME><parameter=KEY>value</parameter>
  </function></tool_call>`, GLM-4.5 `<tool_call>NAME<arg_key>KEY</arg_key><arg_value>value</arg_value>
  </tool_call>`. The template gets the same `tools`, `tool_calls` and `tool` messages.
Either way the engine constrains each call's input with a grammar built from the tool's schema, and
parses calls out of the output with the same syntax.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field

from missive.engines.base import Generation
from missive.media import pdf
from missive.wire import requests as rq
from missive.wire.errors import invalid
from missive.wire.models import ModelCard

_SERVER_TOOL_BLOCKS = (rq.ServerToolUseBlock, rq.ServerToolResultBlock, rq.ContainerUploadBlock)
_TOOL_BLOCKS = (rq.ToolUseBlock, rq.ToolResultBlock, *_SERVER_TOOL_BLOCKS)

# Input schemas of the Anthropic-defined client tools, which come without one.
_STR = {"type": "string"}
_INT = {"type": "integer"}
_RANGE = {"type": "array", "items": _INT}
CLIENT_TOOL_SCHEMAS: dict[str, dict] = {
    "bash": {
        "type": "object",
        "properties": {"command": _STR, "restart": {"type": "boolean"}},
    },
    "text_editor": {
        "type": "object",
        "properties": {
            "command": {"enum": ["view", "create", "str_replace", "insert", "undo_edit"]},
            "path": _STR, "file_text": _STR, "old_str": _STR, "new_str": _STR,
            "insert_line": _INT, "view_range": _RANGE,
        },
        "required": ["command", "path"],
    },
    "memory": {
        "type": "object",
        "properties": {
            "command": {"enum": ["view", "create", "str_replace", "insert", "delete", "rename"]},
            "path": _STR, "file_text": _STR, "old_str": _STR, "new_str": _STR, "insert_line": _INT,
            "insert_text": _STR, "view_range": _RANGE, "old_path": _STR, "new_path": _STR,
        },
        "required": ["command"],
    },
}  # fmt: skip


@dataclass(frozen=True)
class CallSyntax:
    """How a model writes a tool call: `open` NAME `name_end` INPUT-AS-JSON `close`.

    Several calls are written `before` CALL (`separator` CALL)* `after` (Mistral's older `[TOOL_CALLS]
    [{...}, {...}]`); a separator of whitespace is optional.
    """

    name: str
    open: str
    name_end: str
    close: str
    trigger: str  # the start of a call, which wakes the grammar when the model may answer in text
    parallel: bool = True  # False: one call per assistant turn (Llama 3's template refuses more)
    before: str = ""
    separator: str = "\n"
    after: str = ""
    short_ids: bool = False  # the template takes call ids of 9 letters and digits (Mistral)

    def text(self, name: str, tool_input: dict) -> str:
        return f"{self.open}{name}{self.name_end}{json.dumps(tool_input, ensure_ascii=False)}{self.close}"

    def calls_text(self, calls: list[tuple[str, dict]]) -> str:
        return self.before + self.separator.join(self.text(name, args) for name, args in calls) + self.after


@dataclass(frozen=True)
class HarmonySyntax(CallSyntax):
    """gpt-oss's harmony messages (harmony.py): a call is a `commentary` message to `functions.NAME`."""


@dataclass(frozen=True)
class TaggedSyntax:
    """Calls whose arguments are tagged key/value pairs with raw, untyped values (read by the tool's schema):
    `open` NAME `name_end` (`key_open` KEY `key_end` VALUE `value_end`)* `close`.

    These are the canonical spellings, which the grammar writes and `text` renders. The parser
    (tagged_calls.py) reads the tags with any whitespace between them; with `trim_newlines` a value is
    wrapped in one newline on each side, which is not part of it (Qwen3-Coder).
    """

    name: str
    open: str
    name_end: str
    key_open: str
    key_end: str
    value_end: str
    close: str
    trigger: str
    trim_newlines: bool = False
    parallel = True  # several calls in one turn
    starts: tuple[str, ...] = ()  # tag sequences (besides `open`'s) that begin a call in text

    def text(self, name: str, tool_input: dict) -> str:
        args = "".join(f"{self.key_open}{key}{self.key_end}{raw_value(value)}{self.value_end}"
                       for key, value in tool_input.items())
        return f"{self.open}{name}{self.name_end}{args}{self.close}"

    def calls_text(self, calls: list[tuple[str, dict]]) -> str:
        return "".join(self.text(name, args) for name, args in calls)


def raw_value(value: object) -> str:
    """A value as tagged formats write it: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


ToolFormat = CallSyntax | TaggedSyntax

MISSIVE_CALLS = CallSyntax("missive", '<tool_call name="', '">', "</tool_call>", "<tool_call")
HERMES_CALLS = CallSyntax("hermes", '<tool_call>\n{"name": "', '", "arguments": ', "}\n</tool_call>", "<tool_call>")
# Qwen3-Coder, Qwen3.5 and later. The model sometimes leaves out `<tool_call>`: a bare `<function=` starts a call too.
QWEN3_CODER_CALLS = TaggedSyntax(
    "qwen3_coder", "<tool_call>\n<function=", ">\n", "<parameter=", ">\n", "\n</parameter>\n",
    "</function>\n</tool_call>", "<tool_call>", trim_newlines=True, starts=("<function=",),
)
# Llama 3.1 / 3.2 / 3.3: bare JSON, one call per turn; the call ends the turn (<|eom_id|> or <|eot_id|>).
LLAMA3_CALLS = CallSyntax("llama3_json", '{"name": "', '", "parameters": ', "}", '{"name": "', parallel=False)
GLM45_CALLS = TaggedSyntax(
    "glm45", "<tool_call>", "\n", "<arg_key>", "</arg_key>\n<arg_value>", "</arg_value>\n", "</tool_call>",
    "<tool_call>",
)
# Mistral 7B v0.3, Nemo, Small 3/3.1, Large 2 (tokenizers v3 and v7): one JSON list of calls after [TOOL_CALLS].
MISTRAL_V3_CALLS = CallSyntax(
    "mistral_v3", '{"name": "', '", "arguments": ', "}", "[TOOL_CALLS]", before="[TOOL_CALLS] [", separator=", ",
    after="]", short_ids=True,
)
# Mistral Small 3.2, Magistral, Devstral and later (tokenizer v11+): [TOOL_CALLS]NAME[ARGS]{...} for each call.
MISTRAL_V11_CALLS = CallSyntax(
    "mistral_v11", "[TOOL_CALLS]", "[ARGS]", "", "[TOOL_CALLS]", separator="", short_ids=True
)
# gpt-oss: the call's message ends with <|call|>, an end-of-generation token, so one call per turn.
HARMONY_CALLS = HarmonySyntax(
    "harmony", "<|channel|>commentary to=functions.", " <|constrain|>json<|message|>", "", "<|channel|>commentary to=",
    parallel=False,
)
CALL_SYNTAXES: dict[str, ToolFormat] = {
    syntax.name: syntax
    for syntax in (MISSIVE_CALLS, HERMES_CALLS, QWEN3_CODER_CALLS, GLM45_CALLS, LLAMA3_CALLS, MISTRAL_V3_CALLS,
                   MISTRAL_V11_CALLS, HARMONY_CALLS)
}


def template_call_syntax(template: str) -> ToolFormat:
    """The call syntax a chat template teaches, from the tags it shows (the most specific first); Missive's
    own when it takes no tools."""
    if "<|channel|>" in template and "<|message|>" in template:  # harmony: reasoning and calls are channels
        return HARMONY_CALLS
    if "tools" not in template:
        return MISSIVE_CALLS
    if "[TOOL_CALLS]" in template:
        return MISTRAL_V11_CALLS if "[ARGS]" in template else MISTRAL_V3_CALLS
    if "<function=" in template and "<parameter=" in template:
        return QWEN3_CODER_CALLS
    if "<arg_key>" in template and "<arg_value>" in template:
        return GLM45_CALLS
    if "<tool_call>" in template:
        return HERMES_CALLS
    if '"parameters": ' in template and "ipython" in template:  # Llama 3's tool turns are `ipython`
        return LLAMA3_CALLS
    return MISSIVE_CALLS


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model sees it: a name, what it does, and the JSON schema of its input."""

    name: str
    description: str
    schema: dict


def tool_spec(tool: object) -> ToolSpec | None:
    """What the model is told about one tool; None for server tools, which it cannot call here."""
    if isinstance(tool, rq.CustomTool):
        return ToolSpec(tool.name, tool.description or "", tool.input_schema.model_dump(exclude_none=True))
    if isinstance(tool, rq.BashTool):
        return ToolSpec(tool.name, "Run a shell command in a persistent bash session.", CLIENT_TOOL_SCHEMAS["bash"])
    if isinstance(tool, rq.TextEditorTool):
        return ToolSpec(tool.name, "View, create and edit text files.", CLIENT_TOOL_SCHEMAS["text_editor"])
    if isinstance(tool, rq.MemoryTool):
        return ToolSpec(tool.name, "Read and write files in the /memories directory.", CLIENT_TOOL_SCHEMAS["memory"])
    return None


def tool_specs(params: rq.ConversationParams) -> list[ToolSpec]:
    """The tools the model may call now: those of `tools`, then in message order the tools added
    (`tool_addition`, by name or defined inline) and removed (`tool_removal`) during the conversation."""
    specs = {spec.name: spec for tool in params.tools or [] if (spec := tool_spec(tool)) is not None}
    listed = dict(specs)
    for message in params.messages:
        for block in message.content:
            if not isinstance(block, (rq.ToolAdditionBlock, rq.ToolRemovalBlock)):
                continue
            target = block.tool
            if isinstance(target, rq.ToolDefinition):
                spec = tool_spec(target.definition)
            else:
                spec = listed.get(getattr(target, "name", ""))
            if spec is None:
                continue
            if isinstance(block, rq.ToolRemovalBlock):
                specs.pop(spec.name, None)
            else:
                specs[spec.name] = spec
    return list(specs.values())


@dataclass
class ChatTurn:
    role: str  # "system", "user", "assistant", or "tool" (a tool result, for templates that take tools)
    content: str
    tool_calls: list[dict] | None = None  # for templates that take tools
    tool_call_id: str | None = None  # a tool result's call

    def message(self) -> dict:
        """The turn as a chat template's message."""
        extra = {"tool_calls": self.tool_calls} if self.tool_calls else {}
        if self.tool_call_id is not None:
            extra["tool_call_id"] = self.tool_call_id
        return {"role": self.role, "content": self.content, **extra}


MARK = "\U000f8000"  # a private-use character, never part of a real prompt
IMAGE_MARK = 0xF9000  # chr(IMAGE_MARK + i) stands where image i of ChatPrompt.images is (private use too)
BILLING_HEADER = "x-anthropic-billing-header:"
Ttl = str  # "5m" or "1h"


@dataclass
class ChatPrompt:
    turns: list[ChatTurn]
    prefill: str  # text of a final assistant turn, which the response continues
    marks: list[Ttl | None]
    tools: list[dict] | None = None  # for templates that take tools
    images: list[ImageInput] = field(default_factory=list)  # image blocks, in the order of their marks


@dataclass(frozen=True)
class ImageInput:
    """An image block's bytes, and the request path that names it in errors."""

    path: str
    data: bytes


def _images(generation: Generation) -> tuple[list[ImageInput], dict[int, str]]:
    """The conversation's image blocks (their sources are base64 by now), and the mark that stands for
    each block in the text (by the block's id)."""
    paths: dict[int, str] = {}
    for i, message in enumerate(generation.params.messages):
        for j, block in enumerate(message.content):
            paths[id(block)] = f"messages.{i}.content.{j}"
            if isinstance(block, rq.ToolResultBlock) and isinstance(block.content, list):
                for k, part in enumerate(block.content):
                    paths[id(part)] = f"messages.{i}.content.{j}.content.{k}"
    images: list[ImageInput] = []
    marks: dict[int, str] = {}
    for message in generation.messages:
        for block in message.content:
            inner = block.content if isinstance(block, rq.ToolResultBlock) and isinstance(block.content, list) else []
            for candidate in [block, *inner]:
                if isinstance(candidate, rq.ImageBlock):
                    path = paths.get(id(candidate), "messages")
                    source = candidate.source
                    if not isinstance(source, rq.Base64ImageSource):
                        raise invalid(f"{path}.source: {source.type} image sources are not read by this engine")
                    try:
                        data = base64.b64decode(source.data, validate=True)
                    except binascii.Error as exc:
                        raise invalid(f"{path}.source.data: the image data is not valid base64") from exc
                    marks[id(candidate)] = chr(IMAGE_MARK + len(images))
                    images.append(ImageInput(path, data))
    return images, marks


def check_input_support(params: rq.ConversationParams, card: ModelCard) -> None:
    """Refuse, by path, what this model cannot read."""
    caps = card.capabilities
    if params.tools and not caps.tools:
        raise invalid(f"tools: tool use is not supported by model {card.id}")
    for i, tool in enumerate(params.tools or []):
        if isinstance(tool, rq.ServerTool):
            raise invalid(f"tools.{i}: server tool {tool.type} is not available on this server")
    for i, message in enumerate(params.messages):
        for j, block in enumerate(message.content):
            path = f"messages.{i}.content.{j}"
            inner = block.content if isinstance(block, rq.ToolResultBlock) and isinstance(block.content, list) else []
            for candidate in [block, *inner]:
                if isinstance(candidate, rq.ImageBlock) and not caps.image_input:
                    raise invalid(f"{path}: model {card.id} does not support image input")
                unread = (rq.UrlSource, rq.FileSource)  # made inline before the engine is asked (media/sources.py)
                if isinstance(candidate, rq.DocumentBlock) and isinstance(candidate.source, unread):
                    raise invalid(f"{path}: {candidate.source.type} document sources are not read by model {card.id}")
                if isinstance(candidate, rq.DocumentBlock) and isinstance(candidate.source, rq.ContentSource):
                    parts = candidate.source.content if isinstance(candidate.source.content, list) else []
                    if any(isinstance(part, rq.ImageBlock) for part in parts):
                        raise invalid(f"{path}: images inside a content document are not read by model {card.id}")
                if isinstance(candidate, (rq.DocumentBlock, rq.SearchResultBlock)) and candidate.citations:
                    if candidate.citations.enabled:  # docs/documents.md says why
                        raise invalid(f"{path}.citations: citations are not supported by model {card.id}")
            if isinstance(block, _TOOL_BLOCKS) and not caps.tools:
                raise invalid(f"{path}: model {card.id} does not support tool use ({block.type} blocks)")
            if isinstance(block, _SERVER_TOOL_BLOCKS):
                raise invalid(f"{path}: {block.type} blocks need server tools, which this server does not run")
            if isinstance(block, rq.OpaqueBlock) and block.type != "fallback":
                raise invalid(f"{path}: {block.type} blocks need a server feature this server does not run")
            if isinstance(block, rq.ToolAdditionBlock) and isinstance(block.tool, rq.ToolDefinition):
                if isinstance(block.tool.definition, rq.ServerTool):
                    kind = block.tool.definition.type
                    raise invalid(f"{path}.tool.definition: server tool {kind} is not available on this server")


def _document_text(block: rq.DocumentBlock) -> str:
    source = block.source
    if isinstance(source, rq.PlainTextSource):
        body = source.data
    elif isinstance(source, rq.ContentSource):
        if isinstance(source.content, str):
            body = source.content
        else:
            body = "\n".join(part.text for part in source.content if isinstance(part, rq.TextBlock))
    elif isinstance(source, rq.Base64PdfSource):
        body = "\n".join(f'<page number="{n}">\n{text}\n</page>' for n, text in enumerate(_pdf_pages(source), 1))
    else:  # refused earlier by check_input_support
        raise invalid(f"document source {source.type} is not supported")
    labelled = (("Title", block.title), ("Context", block.context))
    header = "".join(f"{label}: {part}\n" for label, part in labelled if part)
    return f"<document>\n{header}{body}\n</document>"


def _pdf_pages(source: rq.Base64PdfSource) -> list[str]:
    """The text of each page (checked before: media/sources.py)."""
    try:
        return pdf.page_texts(base64.b64decode(source.data))
    except (binascii.Error, pdf.PdfError) as error:
        raise invalid(f"document: {error}") from None


def _tool_result_body(block: rq.ToolResultBlock, names: dict[str, str], images: dict[int, str] | None = None) -> str:
    if isinstance(block.content, list):
        return "\n\n".join(
            text for part in block.content if (text := block_text(part, names, images)) is not None
        )
    return block.content or ""


def _tool_result_text(block: rq.ToolResultBlock, names: dict[str, str], images: dict[int, str] | None = None) -> str:
    body = _tool_result_body(block, names, images)
    error = ' is_error="true"' if block.is_error else ""
    return f'<tool_result name="{names.get(block.tool_use_id, "")}"{error}>{body}</tool_result>'


def block_text(block: object, names: dict[str, str], images: dict[int, str] | None = None) -> str | None:
    """The text a model sees for one block; None for blocks it does not see.

    `names` maps tool_use ids to tool names, for the results; `images` maps image blocks (by id) to the
    marks that stand for them, for a model that sees images (`_images`).
    """
    if isinstance(block, rq.ImageBlock):
        return images.get(id(block)) if images else None
    if isinstance(block, rq.TextBlock):
        return block.text
    if isinstance(block, rq.ToolUseBlock):
        return MISSIVE_CALLS.text(block.name, block.input)
    if isinstance(block, rq.ToolResultBlock):
        return _tool_result_text(block, names, images)
    if isinstance(block, rq.ToolReferenceBlock):
        return f"(tool {block.tool_name})"
    if isinstance(block, rq.DocumentBlock):
        return _document_text(block)
    if isinstance(block, rq.SearchResultBlock):
        body = "\n".join(part.text for part in block.content)
        return f"<search_result source={block.source!r} title={block.title!r}>\n{body}\n</search_result>"
    if isinstance(block, (rq.ToolAdditionBlock, rq.ToolRemovalBlock)):
        return _tool_change_text(block)
    if isinstance(block, rq.CompactionBlock):
        return f"<summary of the conversation so far>\n{block.content}\n</summary>" if block.content else None
    if isinstance(block, rq.BrowserStateBlock):
        return json.dumps({"browser_tabs": block.tabs}, ensure_ascii=False)
    return None  # thinking and redacted thinking of earlier turns; fallback markers


def _tool_change_text(block: rq.ToolAdditionBlock | rq.ToolRemovalBlock) -> str:
    target = block.tool
    if isinstance(target, rq.ToolDefinition) and (spec := tool_spec(target.definition)) is not None:
        entry = {"name": spec.name, "description": spec.description, "input_schema": spec.schema}
        return f"A new tool is available: {json.dumps(entry, ensure_ascii=False)}"
    name = getattr(target, "name", None) or getattr(target, "server_name", "")
    return f"The tool {name} is available now." if isinstance(block, rq.ToolAdditionBlock) else (
        f"The tool {name} is no longer available; do not call it."
    )


def _ttl(block: object) -> Ttl | None:
    cache_control = getattr(block, "cache_control", None)
    return (cache_control.ttl or "5m") if cache_control is not None else None


def _is_billing_stamp(block: rq.TextBlock) -> bool:
    """Claude Code's per-request billing stamp (`cch=...`) would defeat prefix reuse; the model needs none of it."""
    return block.text.startswith(BILLING_HEADER)


def to_chat(generation: Generation, calls: ToolFormat) -> ChatPrompt:
    """The turns to render. With `MISSIVE_CALLS` tools are text of Missive's own; otherwise the template takes them."""
    if calls is not MISSIVE_CALLS:
        return _to_template_chat(generation, calls)
    params = generation.params
    marks: list[Ttl | None] = []

    def joined(pieces: list[tuple[str, Ttl | None]]) -> str:
        marks.extend(ttl for _, ttl in pieces)
        return "\n\n".join(text.replace(MARK, "") + MARK for text, _ in pieces)

    turns: list[ChatTurn] = []
    system = _tools_section(params)
    system += _system_pieces(params)
    if system:
        turns.append(ChatTurn("system", joined(system)))
    names = _tool_names(generation)
    images, image_marks = _images(generation)
    for message in generation.messages:
        pieces = [
            (text, _ttl(block))
            for block in message.content
            if (text := block_text(block, names, image_marks)) is not None
        ]
        turns.append(ChatTurn(message.role, joined(pieces)))
    chat = _finish(params, turns, marks)
    chat.images = images
    return chat


def _system_pieces(params: rq.ConversationParams) -> list[tuple[str, Ttl | None]]:
    return [(block.text, _ttl(block)) for block in params.system or [] if not _is_billing_stamp(block)]


def _tool_names(generation: Generation) -> dict[str, str]:
    return {
        block.id: block.name for m in generation.messages for block in m.content if isinstance(block, rq.ToolUseBlock)
    }


def _finish(params: rq.ConversationParams, turns: list[ChatTurn], marks: list[Ttl | None]) -> ChatPrompt:
    if params.cache_control is not None and marks:  # automatic caching: the last cacheable block
        marks[-1] = marks[-1] or params.cache_control.ttl or "5m"
    prefill = ""
    if turns and turns[-1].role == "assistant":
        prefill = turns.pop().content
    return ChatPrompt(turns, prefill, marks)


def _to_template_chat(generation: Generation, calls: ToolFormat) -> ChatPrompt:
    """Turns for a template that takes `tools`, `tool_calls` and `tool` messages.

    Tools and tool uses are rendered by the template as JSON, where no mark survives: a breakpoint
    on one of them moves to the next block boundary (a longer prefix; what is reported is still
    what is cached).
    """
    params = generation.params
    marks: list[Ttl | None] = []
    carried: Ttl | None = None  # a breakpoint waiting for the next block boundary

    def carry(ttl: Ttl | None) -> None:
        nonlocal carried
        carried = ttl or carried

    def joined(pieces: list[tuple[str, Ttl | None]]) -> str:
        nonlocal carried
        for _, ttl in pieces:
            marks.append(ttl or carried)
            carried = None
        return "\n\n".join(text.replace(MARK, "") + MARK for text, _ in pieces)

    specs = [(spec, tool) for tool in params.tools or [] if (spec := tool_spec(tool)) is not None]
    for _, tool in specs:
        carry(_ttl(tool))
    system = _system_pieces(params)
    if specs:
        system.append((_choice_rule(params), None))
    turns = [ChatTurn("system", joined(system))] if system else []
    names = _tool_names(generation)
    images, image_marks = _images(generation)
    for message in generation.messages:
        pieces: list[tuple[str, Ttl | None]] = []
        tool_calls: list[dict] = []
        for block in message.content:
            if isinstance(block, rq.ToolUseBlock):
                tool_calls.append({"type": "function", "id": _call_id(block.id, calls),
                                   "function": {"name": block.name, "arguments": block.input}})
                carry(_ttl(block))
            elif isinstance(block, rq.ToolResultBlock):
                text = _tool_result_body(block, names, image_marks)
                body = joined([("Error: " + text if block.is_error else text, _ttl(block))])
                turns.append(ChatTurn("tool", body, tool_call_id=_call_id(block.tool_use_id, calls)))
            elif (text := block_text(block, names, image_marks)) is not None:
                pieces.append((text, _ttl(block)))
        if pieces or tool_calls:
            turns.append(ChatTurn(message.role, joined(pieces), tool_calls[:1] or None))
            if not calls.parallel:  # one call per turn: each further call as a turn of its own
                turns += [ChatTurn(message.role, "", [call]) for call in tool_calls[1:]]
            elif tool_calls[1:]:
                turns[-1].tool_calls = tool_calls
    if not calls.parallel:
        turns, marks[:] = _interleaved(turns, marks)
    last = turns[-1] if turns else None
    chat = _finish(params, turns, marks)
    chat.images = images
    if last is not None and last.role == "assistant" and last.tool_calls:  # a prefill that ends in calls
        chat.prefill += calls.calls_text([(c["function"]["name"], c["function"]["arguments"]) for c in last.tool_calls])
    chat.tools = [
        {"type": "function", "function": {"name": spec.name, "description": spec.description, "parameters": spec.schema}}
        for spec, _ in specs
    ] or None
    return chat


def text_into_results(turns: list[ChatTurn]) -> list[ChatTurn] | None:
    """`turns` with each user turn that follows tool results folded into the last result, its text after
    the result's; None when there is no such turn. For templates that refuse a user turn there (Mistral's
    check that user and assistant turns alternate, tool turns left out), though the models read it."""
    folded: list[ChatTurn] = []
    for turn in turns:
        if turn.role == "user" and folded and folded[-1].role == "tool":
            last = folded[-1]
            folded[-1] = ChatTurn("tool", last.content + "\n\n" + turn.content, tool_call_id=last.tool_call_id)
        else:
            folded.append(turn)
    return folded if len(folded) < len(turns) else None


def _call_id(tool_use_id: str, calls: ToolFormat) -> str:
    """The id a template is given for a call: the tool_use id, or for Mistral's templates (which take 9 letters
    and digits) 9 hex digits of its hash, the same for the call and its result."""
    if not getattr(calls, "short_ids", False):
        return tool_use_id
    return hashlib.sha256(tool_use_id.encode()).hexdigest()[:9]


def _interleaved(turns: list[ChatTurn], marks: list[Ttl | None]) -> tuple[list[ChatTurn], list[Ttl | None]]:
    """Turns of one call each, with each result right after its call (harmony names a result by the call
    before it): a run of call turns followed by a run of their results becomes call, result, call, result.
    The marks move with their turns."""
    spans, at = [], 0
    for turn in turns:
        count = turn.content.count(MARK)
        spans.append(marks[at : at + count])
        at += count
    order: list[int] = []
    index = 0
    while index < len(turns):
        calls_end = index
        while calls_end < len(turns) and turns[calls_end].role == "assistant" and turns[calls_end].tool_calls:
            calls_end += 1
        results_end = calls_end
        while results_end < len(turns) and turns[results_end].role == "tool":
            results_end += 1
        if calls_end - index < 2 or results_end == calls_end:
            order.append(index)
            index += 1
            continue
        results = {turns[i].tool_call_id: i for i in range(calls_end, results_end)}
        for call in range(index, calls_end):
            order.append(call)
            if (result := results.pop(turns[call].tool_calls[0].get("id"), None)) is not None:
                order.append(result)
        order += results.values()  # results of no call here (refused earlier by the pairing checks)
        index = results_end
    return [turns[i] for i in order], [ttl for i in order for ttl in spans[i]] + marks[at:]


def single_call(choice: object) -> bool:
    """Whether one call at most may be written: with `disable_parallel_tool_use`, and always under
    tool_choice `tool`, which forces exactly one call of that tool, as the Claude API does (clients answer
    that one call, and structured-output helpers read only the first)."""
    return isinstance(choice, rq.ToolChoiceTool) or bool(getattr(choice, "disable_parallel_tool_use", False))


def _choice_rule(params: rq.ConversationParams) -> str:
    choice = params.tool_choice
    rule = {
        "any": "You must call at least one tool.",
        "tool": f"You must call the tool {getattr(choice, 'name', '')}.",
        "none": "Do not call any tool now; answer in text.",
    }.get(choice.type if choice else "auto", "Call a tool when it helps; otherwise answer in text.")
    return rule + (" Call at most one tool." if single_call(choice) else "")


def _tools_section(params: rq.ConversationParams) -> list[tuple[str, Ttl | None]]:
    """Missive's tool-use prompt: one piece per tool (each can carry a breakpoint), then how to call."""
    described = [(spec, tool) for tool in params.tools or [] if (spec := tool_spec(tool)) is not None]
    if not described:
        return []
    pieces: list[tuple[str, Ttl | None]] = [("# Tools\n\nYou can call these tools. Each is described in JSON: its name, "
                                             "what it does, and the JSON schema of its input.", None)]
    for spec, tool in described:
        entry = {"name": spec.name, "description": spec.description, "input_schema": spec.schema}
        pieces.append((json.dumps(entry, ensure_ascii=False), _ttl(tool)))
    one = single_call(params.tool_choice)
    syntax = MISSIVE_CALLS
    pieces.append((
        f"To call a tool, write exactly {syntax.open}TOOL_NAME{syntax.name_end}INPUT_AS_JSON{syntax.close} and nothing "
        "after it. " + ("" if one else "You may call several tools, one after another. ")
        + "The results come back in the next message, as <tool_result> blocks. " + _choice_rule(params),
        None,
    ))
    return pieces
