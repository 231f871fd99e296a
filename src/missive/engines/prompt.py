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

import json
from dataclasses import dataclass

from missive.engines.base import Generation
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
    """How a model writes a tool call: `open` NAME `name_end` INPUT-AS-JSON `close`."""

    name: str
    open: str
    name_end: str
    close: str
    trigger: str  # the start of a call, which wakes the grammar when the model may answer in text
    parallel: bool = True  # False: one call per assistant turn (Llama 3's template refuses more)

    def text(self, name: str, tool_input: dict) -> str:
        return f"{self.open}{name}{self.name_end}{json.dumps(tool_input, ensure_ascii=False)}{self.close}"


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
CALL_SYNTAXES: dict[str, ToolFormat] = {
    syntax.name: syntax for syntax in (MISSIVE_CALLS, HERMES_CALLS, QWEN3_CODER_CALLS, GLM45_CALLS, LLAMA3_CALLS)
}


def template_call_syntax(template: str) -> ToolFormat:
    """The call syntax a chat template teaches, from the tags it shows (the most specific first); Missive's
    own when it takes no tools."""
    if "tools" not in template:
        return MISSIVE_CALLS
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


MARK = "\U000f8000"  # a private-use character, never part of a real prompt
BILLING_HEADER = "x-anthropic-billing-header:"
Ttl = str  # "5m" or "1h"


@dataclass
class ChatPrompt:
    turns: list[ChatTurn]
    prefill: str  # text of a final assistant turn, which the response continues
    marks: list[Ttl | None]
    tools: list[dict] | None = None  # for templates that take tools


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
                if isinstance(candidate, rq.DocumentBlock) and not caps.pdf_input:
                    if not isinstance(candidate.source, (rq.PlainTextSource, rq.ContentSource)):
                        raise invalid(f"{path}: model {card.id} does not support PDF or URL document input")
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
    else:  # refused earlier by check_input_support
        raise invalid(f"document source {source.type} is not supported")
    header = "\n".join(part for part in (block.title, block.context) if part)
    return f"<document>\n{header + chr(10) if header else ''}{body}\n</document>"


def _tool_result_body(block: rq.ToolResultBlock, names: dict[str, str]) -> str:
    if isinstance(block.content, list):
        return "\n\n".join(text for part in block.content if (text := block_text(part, names)) is not None)
    return block.content or ""


def _tool_result_text(block: rq.ToolResultBlock, names: dict[str, str]) -> str:
    body = _tool_result_body(block, names)
    error = ' is_error="true"' if block.is_error else ""
    return f'<tool_result name="{names.get(block.tool_use_id, "")}"{error}>{body}</tool_result>'


def block_text(block: object, names: dict[str, str]) -> str | None:
    """The text a model sees for one block; None for blocks it does not see.

    `names` maps tool_use ids to tool names, for the results.
    """
    if isinstance(block, rq.TextBlock):
        return block.text
    if isinstance(block, rq.ToolUseBlock):
        return MISSIVE_CALLS.text(block.name, block.input)
    if isinstance(block, rq.ToolResultBlock):
        return _tool_result_text(block, names)
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
    for message in generation.messages:
        pieces = [(text, _ttl(block)) for block in message.content if (text := block_text(block, names)) is not None]
        turns.append(ChatTurn(message.role, joined(pieces)))
    return _finish(params, turns, marks)


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
    for message in generation.messages:
        pieces: list[tuple[str, Ttl | None]] = []
        tool_calls: list[dict] = []
        for block in message.content:
            if isinstance(block, rq.ToolUseBlock):
                tool_calls.append({"type": "function", "function": {"name": block.name, "arguments": block.input}})
                carry(_ttl(block))
            elif isinstance(block, rq.ToolResultBlock):
                text = _tool_result_body(block, names)
                turns.append(ChatTurn("tool", joined([("Error: " + text if block.is_error else text, _ttl(block))])))
            elif (text := block_text(block, names)) is not None:
                pieces.append((text, _ttl(block)))
        if pieces or tool_calls:
            turns.append(ChatTurn(message.role, joined(pieces), tool_calls[:1] or None))
            if not calls.parallel:  # one call per turn: each further call as a turn of its own
                turns += [ChatTurn(message.role, "", [call]) for call in tool_calls[1:]]
            elif tool_calls[1:]:
                turns[-1].tool_calls = tool_calls
    last = turns[-1] if turns else None
    chat = _finish(params, turns, marks)
    if last is not None and last.role == "assistant" and last.tool_calls:  # a prefill that ends in calls
        chat.prefill += "".join(calls.text(c["function"]["name"], c["function"]["arguments"]) for c in last.tool_calls)
    chat.tools = [
        {"type": "function", "function": {"name": spec.name, "description": spec.description, "parameters": spec.schema}}
        for spec, _ in specs
    ] or None
    return chat


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
