"""Prompt-lookup drafts for speculative decoding, without a draft model.

Agents and coding clients make a model repeat text that is already in its context: a file's lines in
an edit, a tool result quoted back, the previous version of an answer. When a sequence's last `n`
tokens occurred before in its prompt or output, the tokens that followed them then are a good guess
for what follows now. The scheduler verifies the guess in one forward pass (scheduler.py,
`_speculate`) and keeps the prefix that greedy decoding confirms.
"""

from __future__ import annotations


class PromptLookup:
    """A sequence's tokens so far, with the last position of every `n`-gram in them."""

    def __init__(self, tokens: list[int], n: int) -> None:
        self.n = n
        self.tokens: list[int] = []
        self.seen: dict[tuple[int, ...], int] = {}  # n-gram -> the position of the token that followed it
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        tokens, n = self.tokens, self.n
        if len(tokens) >= n:
            self.seen[tuple(tokens[-n:])] = len(tokens)  # the n-gram that ends here is followed by `token`
        tokens.append(token)

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the last `n` tokens."""
        tokens = self.tokens
        if limit <= 0 or len(tokens) < self.n:
            return []
        at = self.seen.get(tuple(tokens[-self.n :]))
        return [] if at is None else tokens[at : at + limit]
