"""An Anthropic request -> a chat-completions body for an OpenAI-compatible server.

    system (string or blocks)      one system message, first (Claude Code's per-request billing stamp
                                   left out: it would defeat the upstream's prefix cache)
    user / assistant turns         user / assistant messages; `role: "system"` messages stay where they are
    text, documents (text), search results, compactions, tool changes
                                   text parts (engines/prompt.py's text for each block)
    base64 images, image URLs      `image_url` parts (data URLs for base64)
    base64 PDFs                    `file` parts with a data URL for models with pdf_input; for others the
                                   text of each page (engines/prompt.py)
    url and file sources           made inline before (media/sources.py)
    tool_use (assistant)           `tool_calls`, arguments as JSON text
    tool_result (user)             `tool` messages, text, `Error: ` before an error's text; images of a
                                   result follow in a user message
    thinking (assistant)           `reasoning_content` of that assistant message (the upstream's chat
                                   template decides whether earlier turns' reasoning is shown)
    redacted thinking, cache_control, citations
                                   left out (no chat-completions equivalent)
    a final assistant turn         a prefill: `continue_final_message`, no generation prompt (not sent
                                   to llama-server, which sees a prefill itself)
    tools                          `tools` of type function, parameters = input_schema
    tool_choice auto / any / none  "auto" / "required" / "none"
    disable_parallel_tool_use      `parallel_tool_calls: false`
    tool_choice tool (or any, with one tool)
                                   structured output: the tool is described at the end of the system
                                   message and its input schema is the `response_format`; the JSON the
                                   upstream writes is the tool_use block's input (relay.py). Why: this
                                   llama-server takes no named tool_choice (it falls back to "auto"), and
                                   its "required" lets the model write text before the call, which a
                                   small model never ends; every server constrains a json_schema
                                   response_format from the first token, as vLLM does for a named choice
    output_config.format           `response_format` json_schema, strict
    max_tokens                     `max_tokens`, no more than the context window leaves (estimated)
    temperature, top_p, top_k      the same (top_k is an extension vLLM, SGLang and llama-server take)
    stop_sequences                 `stop`
    thinking, for a thinking model `chat_template_kwargs.enable_thinking`
"""

from __future__ import annotations

import json
from typing import Any

from missive.engines.base import Generation
from missive.engines.prompt import BILLING_HEADER, ToolSpec, block_text, single_call, tool_specs
from missive.wire import requests as rq
from missive.wire.errors import invalid

JSON_SCHEMA_NAME = "output"  # response_format needs a name; the Messages API's format has none


def thinking_on(params: rq.MessageCreateParams | rq.CountTokensParams) -> bool:
    return isinstance(params.thinking, (rq.ThinkingEnabled, rq.ThinkingAdaptive))


def forced_tool(params: rq.MessageCreateParams | rq.CountTokensParams) -> ToolSpec | None:
    """The one tool the answer must call: tool_choice `tool`, or `any` with a single tool."""
    choice = params.tool_choice
    specs = tool_specs(params)
    if isinstance(choice, rq.ToolChoiceTool):
        named = [spec for spec in specs if spec.name == choice.name]
        if not named:
            raise invalid(f"tool_choice.name: tool {choice.name!r} is not one of the request's tools")
        return named[0]
    if isinstance(choice, rq.ToolChoiceAny) and len(specs) == 1:
        return specs[0]
    return None


def forced_instruction(spec: ToolSpec) -> str:
    schema = json.dumps(spec.schema, ensure_ascii=False)
    what = f" ({spec.description})" if spec.description else ""
    return (
        f"Call the tool {spec.name}{what} now. Answer with its input only: one JSON object that follows "
        f"this JSON schema: {schema}"
    )


def prompt_body(generation: Generation, upstream_model: str, prefill_flags: bool = True) -> dict[str, Any]:
    """What makes the prompt: model, messages, tools and tool choice, template arguments. A count sends
    this; a generation adds its sampling and output fields (`body`). `prefill_flags`: say that a final
    assistant turn is continued (vLLM needs it; llama-server sees it itself, and with the flags its first
    tool_calls delta loses the arguments' opening brace)."""
    params = generation.params
    forced = forced_tool(params)
    messages = _messages(generation, forced_instruction(forced) if forced else None)
    sent: dict[str, Any] = {"model": upstream_model, "messages": messages}
    tools = None if forced else _tools(params)
    if tools:
        sent["tools"], sent["tool_choice"] = tools
        if single_call(params.tool_choice):
            sent["parallel_tool_calls"] = False
    if generation.model.capabilities.thinking:
        sent["chat_template_kwargs"] = {"enable_thinking": thinking_on(params)}
    if prefill_flags and messages and messages[-1]["role"] == "assistant":  # a prefill: the answer continues it
        sent["continue_final_message"] = True
        sent["add_generation_prompt"] = False
    return sent


def body(
    generation: Generation, upstream_model: str, input_estimate: int, prefill_flags: bool = True
) -> tuple[dict[str, Any], int]:
    """The streaming chat-completions body, and the max_tokens sent (see `max_tokens`)."""
    params = generation.params
    assert isinstance(params, rq.MessageCreateParams)
    sent = prompt_body(generation, upstream_model, prefill_flags)
    sent_max = max_tokens(generation, input_estimate)
    sent.update(stream=True, stream_options={"include_usage": True}, max_tokens=sent_max)
    for name in ("temperature", "top_p", "top_k"):
        if (value := getattr(params, name)) is not None:
            sent[name] = value
    if params.stop_sequences:
        sent["stop"] = list(params.stop_sequences)
    forced = forced_tool(params)
    output = params.output_config.format if params.output_config else None
    schema = forced.schema if forced else output.schema_ if output else None
    if schema is not None:
        sent["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": forced.name if forced else JSON_SCHEMA_NAME, "schema": schema, "strict": True},
        }
    return sent, sent_max


def max_tokens(generation: Generation, input_estimate: int) -> int:
    """The client's max_tokens, but no more than the context window leaves after the (estimated) prompt:
    vLLM refuses a request whose prompt plus max_tokens exceeds the window, while the Messages API (and
    Claude Code, which always asks for 32000) expects the generation to stop at the window's end. A
    max_tokens of 0 (warming a cache) is sent as 1; the relay then shows no content."""
    requested = generation.max_tokens
    room = generation.model.context_window - input_estimate
    return max(1, min(requested, room)) if room > 0 else max(1, requested)


def _tools(params: rq.MessageCreateParams | rq.CountTokensParams) -> tuple[list[dict[str, Any]], str] | None:
    specs = tool_specs(params)
    choice = params.tool_choice
    if not specs:
        return None
    tools = [
        {"type": "function", "function": {"name": spec.name, "description": spec.description, "parameters": spec.schema}}
        for spec in specs
    ]
    mapped = {"auto": "auto", "any": "required", "none": "none"}
    return tools, mapped[choice.type if choice is not None else "auto"]


# --- messages -------------------------------------------------------------------------------------


def _system(params: rq.MessageCreateParams | rq.CountTokensParams, extra: str | None) -> str:
    blocks = [block.text for block in params.system or [] if not block.text.startswith(BILLING_HEADER)]
    return "\n\n".join(blocks + ([extra] if extra else []))


def _messages(generation: Generation, instruction: str | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = _system(generation.params, instruction)
    if system:
        messages.append({"role": "system", "content": system})
    names = {
        block.id: block.name
        for message in generation.messages
        for block in message.content
        if isinstance(block, rq.ToolUseBlock)
    }
    for i, message in enumerate(generation.messages):
        if message.role == "assistant":
            turn = _assistant(message, names)
            if turn["content"] or len(turn) > 2:  # an empty final assistant turn prefills nothing
                messages.append(turn)
        else:
            messages.extend(_user(message, names, i, generation))
    return messages


def _assistant(message: rq.MessageParam, names: dict[str, str]) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, rq.ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif isinstance(block, rq.ThinkingBlock):
            if block.thinking:
                reasoning.append(block.thinking)
        elif (text := block_text(block, names)) is not None:
            texts.append(text)
    sent: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts)}
    if calls:
        sent["tool_calls"] = calls
    if reasoning:
        sent["reasoning_content"] = "\n\n".join(reasoning)
    return sent


def _user(message: rq.MessageParam, names: dict[str, str], index: int, generation: Generation) -> list[dict[str, Any]]:
    """A user (or system) turn: its tool results first, as `tool` messages, then the rest as one message."""
    sent: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    pdf_files = generation.model.capabilities.pdf_input  # otherwise the text of each page, as for local models
    for j, block in enumerate(message.content):
        path = f"messages.{index}.content.{j}"
        if isinstance(block, rq.ToolResultBlock):
            text, images = _tool_result(block, names, path)
            sent.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            parts.extend(images)
        elif isinstance(block, rq.ImageBlock):
            parts.append(_image(block, path))
        elif isinstance(block, rq.DocumentBlock) and isinstance(block.source, rq.Base64PdfSource) and pdf_files:
            url = f"data:{block.source.media_type};base64,{block.source.data}"
            parts.append({"type": "file", "file": {"filename": block.title or "document.pdf", "file_data": url}})
        elif (text := block_text(block, names)) is not None:
            parts.append({"type": "text", "text": text})
    if parts:
        only_text = all(part["type"] == "text" for part in parts)
        content: Any = "\n\n".join(part["text"] for part in parts) if only_text else parts
        sent.append({"role": message.role, "content": content})
    return sent


def _tool_result(block: rq.ToolResultBlock, names: dict[str, str], path: str) -> tuple[str, list[dict[str, Any]]]:
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(block.content, str):
        texts.append(block.content)
    for k, part in enumerate(block.content if isinstance(block.content, list) else []):
        if isinstance(part, rq.ImageBlock):
            images.append(_image(part, f"{path}.content.{k}"))
        elif (text := block_text(part, names)) is not None:
            texts.append(text)
    text = "\n\n".join(texts)
    return ("Error: " + text if block.is_error else text), images


def _image(block: rq.ImageBlock, path: str) -> dict[str, Any]:
    source = block.source
    if isinstance(source, rq.Base64ImageSource):
        url = f"data:{source.media_type};base64,{source.data}"
    elif isinstance(source, rq.UrlSource):
        url = source.url
    else:
        raise invalid(f"{path}.source: image sources of type {source.type} are not supported by this engine")
    return {"type": "image_url", "image_url": {"url": url}}
