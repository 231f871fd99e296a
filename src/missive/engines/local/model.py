"""One GGUF model loaded with llama.cpp: weights, one context of `parallel` sequences, the chat template
and the tokenizer.

By default the context keeps one KV stream per sequence (not a unified buffer): each sequence attends
over its own cells only, so a sequence's numbers do not depend on what else is in the batch, and
greedy output under load equals the output of the same request alone. `unified_kv` trades that for
throughput with many sequences.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2.sandbox
import llama_cpp
from llama_cpp import _internals

from missive.engines.local import gguf
from missive.engines.local.default_model import default_model_path
from missive.engines.local.repetition import closing_tokens
from missive.engines.local.thinking import (
    HARMONY_ANALYSIS,
    THINK_TAGS,
    opened_by_template,
    template_reasons,
)
from missive.engines.local.vision import ImageSpan, Vision, digest, placeholders
from missive.engines.prompt import (
    CALL_SYNTAXES,
    IMAGE_MARK,
    MARK,
    ChatPrompt,
    HarmonySyntax,
    ImageInput,
    ToolFormat,
    Ttl,
    template_call_syntax,
    text_into_results,
)
from missive.settings import LocalEngineSettings, ModelSettings
from missive.wire.errors import invalid

log = logging.getLogger("missive.engine")

# Used when a GGUF carries no chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class Prompt:
    """A rendered, tokenized prompt and the token positions where its blocks end."""

    tokens: list[int]
    boundaries: list[int]  # token position after each block, in prompt order
    breakpoints: list[tuple[int, Ttl]]  # (position, ttl) of the blocks marked with cache_control
    images: list[ImageSpan] = field(default_factory=list)  # image chunks, in prompt order (vision.py)

    def image_at(self, position: int) -> ImageSpan | None:
        """The image chunk that starts at this position, if one does."""
        return next((span for span in self.images if span.start == position), None)


_silence_llama_log = llama_cpp.llama_log_callback(lambda level, text, data: None)


class LocalModel:
    def __init__(self, config: ModelSettings, engine: LocalEngineSettings) -> None:
        self.config = config
        self.path = model_path(config)
        llama_cpp.llama_log_set(_silence_llama_log, ctypes.c_void_p(0))
        log.info("loading model %s from %s (%.0f MB)", config.id, self.path.name, self.path.stat().st_size / 1e6)
        started = time.monotonic()
        params = llama_cpp.llama_model_default_params()
        self.model = _internals.LlamaModel(path_model=str(self.path), params=params, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model.model)
        self.parallel = engine.parallel
        self.n_ctx_seq = config.context_window

        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx_seq * self.parallel
        cparams.n_seq_max = self.parallel
        cparams.kv_unified = engine.unified_kv
        cparams.n_batch = max(engine.prefill_chunk, self.parallel)
        cparams.n_ubatch = cparams.n_batch
        threads = engine.threads or max(1, _cpu_count())
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if engine.flash_attention else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        if engine.kv_cache_type == "q8_0":  # llama.cpp quantizes V only under flash attention
            cparams.type_k = llama_cpp.GGML_TYPE_Q8_0
            cparams.type_v = llama_cpp.GGML_TYPE_Q8_0 if engine.flash_attention else llama_cpp.GGML_TYPE_F16
        self.context = _internals.LlamaContext(model=self.model, params=cparams, verbose=False)
        self.ctx = self.context.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vision: Vision | None = None
        if config.mmproj:
            self.vision = Vision(config.mmproj, self.model.model, config.id, threads, cparams.n_batch)
            log.info("model %s: takes images through the projector %s", config.id, Path(config.mmproj).name)

        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos_text = self.piece(self.model.token_bos()).decode(errors="ignore")
        self.eos_text = self.piece(self.model.token_eos()).decode(errors="ignore")
        template = template_source(config, self.path, self.model.metadata())
        self.template = chat_environment().from_string(template)
        self.calls = template_call_syntax(template) if config.tool_format == "auto" else CALL_SYNTAXES[config.tool_format]
        log.info("model %s: tools reach it in the %s format", config.id, self.calls.name)
        self.shown_tags = shown_tags(syntax_tags(self.calls), self.tokenize_continuation, self._piece)
        if self.shown_tags:
            log.info("model %s: %d control tokens of its call syntax are shown as text", config.id, len(self.shown_tags))
        self.thinking_syntax = HARMONY_ANALYSIS if isinstance(self.calls, HarmonySyntax) else THINK_TAGS
        thinks = template_reasons(template) if config.reasoning is None else config.reasoning  # as `reasons` does
        how = "set by `reasoning`" if config.reasoning is not None else "read from the chat template"
        log.info("model %s: %s in %s (%s)", config.id, "reasons" if thinks else "does not reason",
                 self.thinking_syntax.name, how)
        log.info(
            "model %s ready in %.2f s: %d sequences x %d tokens of context (trained on %d), %d threads",
            config.id,
            time.monotonic() - started,
            self.parallel,
            self.n_ctx_seq,
            self.model.n_ctx_train(),
            threads,
        )

    # --- prompt ---------------------------------------------------------------------------------

    def prompt(self, chat: ChatPrompt, with_boundaries: bool) -> Prompt:
        """Render and tokenize. Block boundaries are worked out only when asked (prompt caching)."""
        rendered = self._render(chat)
        marked = rendered + opened_by_template(rendered, chat.prefill)
        tokens: list[int] = []
        boundaries: list[int] = []
        spans: list[ImageSpan] = []
        # Text between images is tokenized piece by piece, as libmtmd does; without images it is one piece.
        for index, piece in enumerate(_split_images(marked, chat.images)):
            if isinstance(piece, ImageInput):
                self._add_image(piece, tokens, spans)
                continue
            parts = piece.split(MARK)
            text = "".join(parts)
            first = index == 0
            piece_tokens = self.tokenize(text) if first else self.tokenize_continuation(text)
            if with_boundaries:
                offsets, at = [], 0  # byte offset of each mark in the clean text
                for part in parts[:-1]:
                    at += len(part.encode())
                    offsets.append(at)
                skip = 1 if first and self._adds_bos(text) else 0
                boundaries += [len(tokens) + p for p in self._positions(piece_tokens, offsets, skip=skip)]
            tokens += piece_tokens
        if spans and spans[-1].end == len(tokens):
            raise invalid(f"{spans[-1].path}: a prompt cannot end with an image")
        if not with_boundaries:
            return Prompt(tokens, [], [], spans)
        if len(boundaries) != len(chat.marks):  # the template dropped or escaped block text: no boundaries known
            log.warning("model %s: the chat template does not render every block as text; caching is off", self.config.id)
            return Prompt(tokens, [], [], spans)
        breakpoints = [(pos, ttl) for pos, ttl in zip(boundaries, chat.marks, strict=True) if ttl is not None]
        return Prompt(tokens, boundaries, breakpoints, spans)

    def _add_image(self, image: ImageInput, tokens: list[int], spans: list[ImageSpan]) -> None:
        """Append an image's pieces: the text tokens its projector wraps it in, and its chunks, each as
        placeholder ids derived from the image's bytes (so that prefix matching tells images apart)."""
        if self.vision is None:
            raise invalid(f"{image.path}: model {self.config.id} does not support image input")
        key = digest(image)
        for index, piece in enumerate(self.vision.pieces(image)):
            if isinstance(piece, list):
                tokens += piece
                continue
            chunk, length = piece
            spans.append(ImageSpan(len(tokens), length, chunk, image.path))
            tokens += placeholders(key, index, length)

    def _render(self, chat: ChatPrompt) -> str:
        """The template's text of the turns. A template that refuses a user turn right after tool results
        (Mistral's: their roles must alternate once tool turns are left out) gets that text in the last
        result instead; one that refuses the conversation otherwise is a 400."""
        attempts = [chat.turns]
        if (folded := text_into_results(chat.turns)) is not None:
            attempts.append(folded)
        for attempt, turns in enumerate(attempts, 1):
            try:
                return self.template.render(
                    messages=[turn.message() for turn in turns],
                    tools=chat.tools,
                    add_generation_prompt=True,
                    bos_token=self.bos_text,
                    eos_token=self.eos_text,
                )
            except jinja2.TemplateError as error:  # the template refuses this conversation (roles, ids, ...)
                if attempt == len(attempts):
                    message = f"messages: the chat template of model {self.config.id} refuses them: {error}"
                    raise invalid(message) from None
        raise AssertionError("unreachable")

    def _positions(self, tokens: list[int], offsets: list[int], skip: int) -> list[int]:
        """For each byte offset of the text, the number of leading tokens that end at or before it.

        `skip` leading tokens (a BOS the tokenizer added) are not part of the text.
        """
        ends, end = [], 0
        for token in tokens[skip:]:
            end += len(self.piece(token))
            ends.append(end)
        positions, index = [], 0
        for offset in offsets:
            while index < len(ends) and ends[index] <= offset:
                index += 1
            positions.append(index + skip)
        return positions

    def _adds_bos(self, text: str) -> bool:
        return self.add_bos and not (self.bos_text and text.startswith(self.bos_text))

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode(), add_bos=self._adds_bos(text), special=True)

    def tokenize_continuation(self, text: str) -> list[int]:
        """Tokens of text that continues a sequence (no BOS)."""
        return self.model.tokenize(text.encode(), add_bos=False, special=True)

    def piece(self, token: int) -> bytes:
        """The bytes of one token as it appears in the prompt (special tokens included)."""
        return self._piece(token, True)

    def output_piece(self, token: int) -> bytes:
        """The bytes of one generated token as the client sees it (special tokens are not text, except the
        tags of the model's call and thinking syntax, which the parsers read)."""
        return self._piece(token, token in self.shown_tags)

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one model, lives as long as the process
    def _piece(self, token: int, special: bool) -> bytes:
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, size, 0, special)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    @functools.cached_property
    def closing_tokens(self) -> list[int]:
        """The tokens that only close JSON levels (repetition.py), found once by reading the vocabulary."""
        return closing_tokens(llama_cpp.llama_vocab_n_tokens(self.vocab), self.output_piece)

    @functools.cached_property
    def end_tokens(self) -> list[int]:
        """End-of-generation tokens: end of sequence, end of turn."""
        found = (llama_cpp.llama_vocab_eos(self.vocab), llama_cpp.llama_vocab_eot(self.vocab))
        return sorted({token for token in found if token >= 0 and self.is_end_of_generation(token)})

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.vision is not None:
            self.vision.close()
        self.context.close()
        self.model.close()


def _split_images(text: str, images: list[ImageInput]) -> list[str | ImageInput]:
    """The rendered text cut at the image marks: text pieces and images, in order. Each image must show
    exactly once (a template that drops or repeats block text cannot place them)."""
    if not images:
        return [text]
    marks = re.compile("[" + chr(IMAGE_MARK) + "-" + chr(IMAGE_MARK + len(images) - 1) + "]")
    pieces: list[str | ImageInput] = []
    seen: set[int] = set()
    at = 0
    for match in marks.finditer(text):
        index = ord(match.group()) - IMAGE_MARK
        if index in seen:
            reserved = f"U+{ord(match.group()):X}"
            raise invalid(f"{images[index].path}: the prompt shows this image twice (text must not hold {reserved})")
        seen.add(index)
        pieces += [text[at : match.start()], images[index]]
        at = match.end()
    missing = [image.path for i, image in enumerate(images) if i not in seen]
    if missing:
        raise invalid(f"{missing[0]}: the model's chat template does not show this image")
    return [*pieces, text[at:]]


_TAG = re.compile(r"<[^<>\s]+>|\[[A-Z_]+\]")  # <tool_call>, </arg_value>, [TOOL_CALLS]


def syntax_tags(calls: ToolFormat) -> list[str]:
    """The tags a call syntax (and `<think>`) is written with."""
    spelled = " ".join(str(part) for part in vars(calls).values() if isinstance(part, str))
    if isinstance(calls, HarmonySyntax):  # the message structure, and the reasoning's channel
        spelled += " " + " ".join(vars(HARMONY_ANALYSIS).values()) + " <|call|> <|return|>"
    return sorted(set(_TAG.findall(spelled + " <think> </think>")))


def shown_tags(tags: list[str], tokenize: Callable[[str], list[int]], piece: Callable[[int, bool], bytes]) -> frozenset[int]:
    """The tags that are one control token each, which output text would leave out.

    In some GGUFs a format's tags are control tokens (llama.cpp does not render those as text), in others
    plain added tokens; the parsers need to see them either way.
    """
    shown = set()
    for tag in tags:
        tokens = tokenize(tag)
        if len(tokens) == 1 and not piece(tokens[0], False) and piece(tokens[0], True) == tag.encode():
            shown.add(tokens[0])
    return frozenset(shown)


def model_path(config: ModelSettings) -> Path:
    return Path(config.path) if config.path else default_model_path()


def template_source(config: ModelSettings, path: Path, metadata: dict[str, str] | None = None) -> str:
    """The chat template a model is rendered with: `chat_template_file`, else the GGUF's own, else ChatML.

    The GGUF's own comes from the loaded model's `metadata` when there is one, else from the file's header."""
    if config.chat_template_file:
        return Path(config.chat_template_file).read_text()
    found = metadata.get(gguf.CHAT_TEMPLATE_KEY) if metadata is not None else gguf.chat_template(path)
    return found or CHATML_TEMPLATE


@functools.lru_cache(maxsize=256)
def _template_reasons(path: str, template_file: str | None) -> bool:
    config = ModelSettings(id="-", path=path, chat_template_file=template_file)
    try:
        return template_reasons(template_source(config, Path(path)))
    except (OSError, ValueError):  # no such file: loading it fails with the reason
        return False


def reasons(config: ModelSettings) -> bool:
    """Whether the model thinks in `<think>`: the `reasoning` setting, else read from its chat template.

    Read without loading the model (the API process describes models before the engine loads them)."""
    if config.reasoning is not None:
        return config.reasoning
    return _template_reasons(str(model_path(config)), config.chat_template_file)


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def chat_environment() -> jinja2.Environment:
    """The Jinja environment chat templates are rendered in, with what the models' templates expect of it
    (as transformers' `apply_chat_template` gives them): `raise_exception`, `strftime_now` (Mistral's and
    gpt-oss's templates write the date), and a `tojson` that keeps the keys' order and writes non-ASCII as it
    is (Jinja's own sorts keys and escapes `<` and `'`, which the models were not trained on, and would
    turn the block marks inside a JSON string into escapes)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_template_error
    env.globals["strftime_now"] = _strftime_now
    env.filters["tojson"] = _tojson
    return env


def _tojson(value: object, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return time.strftime(format)


def _raise_template_error(message: str) -> None:
    raise jinja2.TemplateError(message)
