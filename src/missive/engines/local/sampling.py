"""Choosing each sequence's next token: temperature, top-k, top-p, and a grammar when there is one.

A grammar is checked the way llama.cpp's own server does it, because checking every token of the
vocabulary against it costs more than the forward pass: sample without the grammar, ask the grammar
whether that one token is allowed, and only if it is not, apply the grammar to the whole vocabulary
and sample again. The result is the same as applying the grammar first.

A lazy grammar (tool_choice auto) wakes when the output contains its trigger (`<tool_call`), and
llama.cpp then replays into it every piece from the trigger's start, whole: a token that runs past
the trigger's end (`called` after `<tool_`) is replayed whole too, and llama.cpp aborts the process
when the grammar cannot take its rest. Such a token is never chosen: it is banned for that step and
the sampler draws again, so the trigger always ends at a token's end.

With a grammar comes a `LoopGuard` (repetition.py): when the constrained JSON has started to repeat
itself, the next tokens are sampled among the grammar's tokens that close the looping level.
"""

from __future__ import annotations

import ctypes
import math
import secrets
from collections.abc import Collection
from dataclasses import dataclass

import llama_cpp
import numpy as np
from llama_cpp import _internals

from missive.engines.local.grammar import Grammar
from missive.engines.local.repetition import LoopGuard

MAX_BANNED = 16  # tokens banned at one step for running past a lazy trigger before the output ends


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off


class TokenSampler:
    def __init__(
        self,
        vocab: llama_cpp.llama_vocab_p,
        sampling: Sampling,
        grammar: Grammar | None,
        guard: LoopGuard | None = None,
    ) -> None:
        self.chain = _internals.LlamaSampler()
        if sampling.temperature == 0:
            self.chain.add_greedy()
        else:
            if sampling.top_k > 0:
                self.chain.add_top_k(sampling.top_k)
            if sampling.top_p < 1.0:
                self.chain.add_top_p(sampling.top_p, 1)
            self.chain.add_temp(sampling.temperature)
            self.chain.add_dist(secrets.randbits(31))
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.end = llama_cpp.llama_vocab_eos(vocab)  # sampled when the grammar allows nothing more
        self.grammar = _grammar_sampler(vocab, grammar) if grammar is not None else None
        # The next token is the argmax of the logits alone: what speculative decoding can check exactly.
        self.greedy = sampling.temperature == 0 and grammar is None
        self.guard = guard if grammar is not None else None
        self.vocab = vocab
        self.trigger = grammar.lazy_trigger.encode() if grammar is not None and grammar.lazy_trigger else None
        self._tail = b""  # the end of the output while a lazy grammar awaits its trigger
        self._one = (llama_cpp.llama_token_data * 1)()
        self._all: _internals.LlamaTokenDataArray | None = None

    def sample(self, ctx: llama_cpp.llama_context_p, index: int) -> int:
        steered = self.guard.steer() if self.guard is not None else None
        token = self._sample_among(ctx, index, steered) if steered else None
        if token is None:
            token = llama_cpp.llama_sampler_sample(self.chain.sampler, ctx, index)
            if self.grammar is None:
                return token
            if not self._allowed(token):
                allowed = self._resample(ctx, index)
                if allowed is None:  # no token can continue: end here (llama.cpp aborts on a forbidden one)
                    return self.end
                token = allowed
        banned: set[int] = set()
        while self._crosses_trigger(token):
            banned.add(token)
            again = self._resample(ctx, index, banned) if len(banned) < MAX_BANNED else None
            if again is None:
                return self.end
            token = again
        self._accept_grammar(token)
        if self.guard is not None:
            self.guard.feed(token)
        return token

    def accept(self, token: int) -> None:
        """A token written for the model rather than sampled (e.g. closing its thinking)."""
        llama_cpp.llama_sampler_accept(self.chain.sampler, token)
        if self.grammar is not None and self._allowed(token) and not self._crosses_trigger(token):
            self._accept_grammar(token)  # the grammar cannot take what it forbids
        if self.guard is not None:
            self.guard.feed(token)

    def _piece(self, token: int) -> bytes:
        out = ctypes.create_string_buffer(128)
        size = llama_cpp.llama_token_to_piece(self.vocab, token, out, len(out), 0, True)
        return out.raw[: max(size, 0)]

    def _crosses_trigger(self, token: int) -> bool:
        """Whether `token` would complete a lazy grammar's trigger and run past its end."""
        if self.trigger is None:
            return False
        joined = self._tail + self._piece(token)
        found = joined.find(self.trigger)
        return found >= 0 and found + len(self.trigger) < len(joined)

    def _accept_grammar(self, token: int) -> None:
        assert self.grammar is not None
        llama_cpp.llama_sampler_accept(self.grammar, token)
        if self.trigger is not None:
            joined = self._tail + self._piece(token)
            if self.trigger in joined:
                self.trigger = None  # awake: the grammar checks every token from here
            else:
                self._tail = joined[-len(self.trigger) :]

    def _sample_among(self, ctx: llama_cpp.llama_context_p, index: int, tokens: list[int]) -> int | None:
        """Sample among `tokens` those that the grammar allows (the guard's steering); None if it allows none."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        data = (llama_cpp.llama_token_data * len(tokens))()
        for i, token in enumerate(tokens):
            data[i].id, data[i].logit, data[i].p = token, float(logits[token]), 0.0
        candidates = llama_cpp.llama_token_data_array(data=data, size=len(tokens), selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
        if all(math.isinf(data[i].logit) for i in range(len(tokens))):
            return None
        llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(candidates))
        return int(candidates.data[candidates.selected].id)

    def _allowed(self, token: int) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        candidates = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
        return not math.isinf(self._one[0].logit)

    def _resample(self, ctx: llama_cpp.llama_context_p, index: int, banned: Collection[int] = ()) -> int | None:
        """Sample with the grammar applied to the whole vocabulary, without `banned`; None if it allows no
        token at all."""
        if self._all is None:
            self._all = _internals.LlamaTokenDataArray(n_vocab=self.n_vocab)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        self._all.copy_logits(logits)
        for token in banned:
            self._all.candidates_data.logit[token] = -math.inf
        candidates = ctypes.byref(self._all.candidates)
        llama_cpp.llama_sampler_apply(self.grammar, candidates)
        if not np.isfinite(self._all.candidates_data.logit[: self._all.candidates.size]).any():
            return None
        llama_cpp.llama_sampler_apply(self.chain.sampler, candidates)
        return int(self._all.candidates.data[self._all.candidates.selected].id)

    def close(self) -> None:
        self.chain.close()
        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None


def _grammar_sampler(vocab: llama_cpp.llama_vocab_p, grammar: Grammar) -> llama_cpp.llama_sampler_p:
    gbnf, root = grammar.gbnf.encode(), b"root"
    if grammar.lazy_trigger is None:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf, root)
    else:
        patterns = (ctypes.c_char_p * 1)(_regex_literal(grammar.lazy_trigger).encode())
        sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            vocab, gbnf, root, patterns, 1, (llama_cpp.llama_token * 0)(), 0
        )
    if not sampler:
        raise ValueError("the output grammar could not be compiled")
    return sampler


def _regex_literal(text: str) -> str:
    """`text` as a regular expression that matches it (llama.cpp reads lazy triggers as patterns, and aborts
    the process on one that does not compile, such as Llama 3's `{"name": "`)."""
    return "".join("\\" + char if char in "\\^$.|?*+()[]{}" else char for char in text)
