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
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2.sandbox
import llama_cpp
from llama_cpp import _internals

from missive.engines.local import gguf
from missive.engines.local.default_model import default_model_path
from missive.engines.local.repetition import closing_tokens
from missive.engines.local.thinking import opened_by_template, template_reasons
from missive.engines.prompt import CALL_SYNTAXES, MARK, ChatPrompt, ToolFormat, Ttl, template_call_syntax
from missive.settings import LocalEngineSettings, ModelSettings

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
        self.context = _internals.LlamaContext(model=self.model, params=cparams, verbose=False)
        self.ctx = self.context.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)

        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos_text = self.piece(self.model.token_bos()).decode(errors="ignore")
        self.eos_text = self.piece(self.model.token_eos()).decode(errors="ignore")
        template = template_source(config, self.path, self.model.metadata())
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_template_error
        self.template = env.from_string(template)
        self.calls = template_call_syntax(template) if config.tool_format == "auto" else CALL_SYNTAXES[config.tool_format]
        log.info("model %s: tools reach it in the %s format", config.id, self.calls.name)
        self.shown_tags = shown_tags(syntax_tags(self.calls), self.tokenize_continuation, self._piece)
        if self.shown_tags:
            log.info("model %s: %d control tokens of its call syntax are shown as text", config.id, len(self.shown_tags))
        thinks = template_reasons(template) if config.reasoning is None else config.reasoning  # as `reasons` does
        how = "set by `reasoning`" if config.reasoning is not None else "read from the chat template"
        log.info("model %s: %s in <think> (%s)", config.id, "reasons" if thinks else "does not reason", how)
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
        messages = [
            {"role": turn.role, "content": turn.content, **({"tool_calls": turn.tool_calls} if turn.tool_calls else {})}
            for turn in chat.turns
        ]
        rendered = self.template.render(
            messages=messages,
            tools=chat.tools,
            add_generation_prompt=True,
            bos_token=self.bos_text,
            eos_token=self.eos_text,
        )
        marked = rendered + opened_by_template(rendered, chat.prefill)
        parts = marked.split(MARK)
        text = "".join(parts)
        tokens = self.tokenize(text)
        if not with_boundaries:
            return Prompt(tokens, [], [])
        if len(parts) - 1 != len(chat.marks):  # the template dropped or escaped block text: no boundaries known
            log.warning("model %s: the chat template does not render every block as text; caching is off", self.config.id)
            return Prompt(tokens, [], [])
        offsets, at = [], 0  # byte offset of each mark in the clean text
        for part in parts[:-1]:
            at += len(part.encode())
            offsets.append(at)
        boundaries = self._positions(tokens, offsets, skip=1 if self._adds_bos(text) else 0)
        breakpoints = [(pos, ttl) for pos, ttl in zip(boundaries, chat.marks, strict=True) if ttl is not None]
        return Prompt(tokens, boundaries, breakpoints)

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
        self.context.close()
        self.model.close()


_TAG = re.compile(r"<[^<>\s]+>|\[[A-Z_]+\]")  # <tool_call>, </arg_value>, [TOOL_CALLS]


def syntax_tags(calls: ToolFormat) -> list[str]:
    """The tags a call syntax (and `<think>`) is written with."""
    spelled = " ".join(str(part) for part in vars(calls).values() if isinstance(part, str))
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


def _raise_template_error(message: str) -> None:
    raise jinja2.TemplateError(message)
