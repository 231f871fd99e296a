"""Are a token's logits the same when it is decoded alone and inside a multi-token verification pass?

Speculative decoding (prompt lookup) verifies k guessed tokens of one sequence in one forward pass. Its
greedy output equals plain decoding token for token only if llama.cpp's CPU kernels give each row of
that pass the same logits, to the bit, as the same token decoded in a pass of its own. This script
checks it on the default model, with Missive's context layout (one KV stream per sequence,
`parallel` sequences, flash attention as configured), at several lengths of context:

  alone      greedy decode one token per pass, keeping each step's logits
  verify     the same sequence from the same prefix, the pending token plus the next k tokens of the
             alone run in one pass (one sequence in the batch)
  busy       the same verification pass with other sequences decoding one token each beside it

For each it prints the largest |delta logit| against `alone` over the k+1 rows and whether the
argmax agrees. Run:  .venv/bin/python bench/verify_identity.py [--no-flash] [--k 6] [--kv-type q8_0]

With --chunking it checks the rule that prefix reuse rests on (passes.py) instead: a prompt prefilled
in Missive's chunks and in random other chunkings; wherever `PassShapes` gives every position the same
kind in both, the last token's logits must be the same to the bit. It prints each trial and counts the
wrong predictions (must be 0) and the conservative ones (alike, though predicted not).
"""

from __future__ import annotations

import argparse
import random

import llama_cpp
import numpy as np

from missive.engines.local.model import LocalModel
from missive.engines.local.passes import PassShapes
from missive.settings import LocalEngineSettings, ModelSettings

PASSAGE = (
    "The lighthouse keeper climbed the stairs every evening, counting the steps as his father had, "
    "and lit the lamp before the sun touched the water. "
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-flash", action="store_true")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--lengths", default="40,300,700,1500")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kv-type", choices=["f16", "q8_0"], default="f16", help="the KV cache's type")
    parser.add_argument("--chunking", action="store_true", help="check the pass kinds of prefix reuse instead")
    args = parser.parse_args()
    engine = LocalEngineSettings(parallel=4, threads=args.threads, flash_attention=not args.no_flash,
                                 kv_cache_type=args.kv_type)
    model = LocalModel(ModelSettings(id="m", context_window=2048), engine)
    n_vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def decode(items: list[tuple[int, int, int, bool]]) -> None:
        batch.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = seq
        assert llama_cpp.llama_decode(model.ctx, batch) == 0

    def logits(row: int) -> np.ndarray:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(model.ctx, row), shape=(n_vocab,)).copy()

    def prefill(seq: int, tokens: list[int], ends: list[int] | None = None) -> None:
        """Prefill in passes ending at `ends` (default: Missive's chunks of 256)."""
        llama_cpp.llama_memory_seq_rm(model.memory, seq, -1, -1)
        start = 0
        for end in ends or sorted({*range(256, len(tokens), 256), len(tokens)}):
            decode([(tokens[p], p, seq, p == len(tokens) - 1) for p in range(start, end)])
            start = end

    if args.chunking:
        chunking(model, PassShapes(engine), prefill, logits)
        llama_cpp.llama_batch_free(batch)
        model.close()
        return
    for length in (int(n) for n in args.lengths.split(",")):
        prompt = model.tokenize(PASSAGE * 200)[:length]
        others = [model.tokenize(f"Question {i}: " + PASSAGE * 40)[: 64 + 32 * i] for i in (1, 2, 3)]
        # alone: greedy, one token per pass
        prefill(0, prompt)
        pending = int(np.argmax(logits(-1)))
        alone, tokens = [], [pending]
        for step in range(args.k + 1):
            decode([(tokens[-1], length + step, 0, True)])
            row = logits(0)
            alone.append(row)
            tokens.append(int(np.argmax(row)))
        # verify: pending + k tokens of the alone run in one pass
        prefill(0, prompt)
        decode([(t, length + i, 0, True) for i, t in enumerate(tokens[: args.k + 1])])
        verify = [logits(i) for i in range(args.k + 1)]
        # busy: the same pass with three other sequences decoding one token each
        prefill(0, prompt)
        for s, other in enumerate(others, start=1):
            prefill(s, other)
        items = [(t, length + i, 0, True) for i, t in enumerate(tokens[: args.k + 1])]
        items += [(other[-1], len(other), s, True) for s, other in enumerate(others, start=1)]
        decode(items)
        busy = [logits(i) for i in range(args.k + 1)]
        for name, rows in (("verify", verify), ("busy", busy)):
            delta = max(float(np.max(np.abs(a - b))) for a, b in zip(alone, rows))
            same = all(int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(alone, rows))
            exact = all(np.array_equal(a, b) for a, b in zip(alone, rows))
            print(f"context {length:5d}  {name:<7} k={args.k}  max |dlogit| {delta:.6f}  bit-identical {exact}  argmax same {same}")
    llama_cpp.llama_batch_free(batch)
    model.close()


def chunking(model: LocalModel, shapes: PassShapes, prefill, logits) -> None:  # noqa: ANN001
    def run(tokens: list[int], ends: list[int], seq: int) -> np.ndarray:
        prefill(seq, tokens, ends)
        return logits(-1)

    def kinds(ends: list[int]) -> list:
        plan, start, out = shapes.plan(ends), 0, []
        for end, kind in zip(plan.ends, plan.kinds):
            out += [kind] * (end - start)
            start = end
        return out

    rng = random.Random(1)
    text = " ".join(f"The keeper of light number {i} climbed {i * 7 % 13} stairs, counting." for i in range(400))
    wrong = conservative = 0
    for length in (45, 130, 300, 700, 1500):
        tokens = model.tokenize(text)[:length]
        base = sorted(set(range(256, length, 256)) | {length})
        reference = run(tokens, base, 0)
        for _ in range(10):
            cuts = set(base)
            for _ in range(rng.randint(1, 4)):
                cuts.add(rng.choice([rng.randint(1, length - 1), max(1, length - rng.randint(1, 70))]))
            ends = sorted(cuts)
            same = bool(np.array_equal(reference, run(tokens, ends, 1)))
            predicted = kinds(ends) == kinds(base)
            wrong += predicted and not same
            conservative += same and not predicted
            print(f"prompt {length:5d}  chunk ends {ends}  predicted alike {predicted}  bit-identical {same}")
    print(f"wrong predictions: {wrong} (must be 0); conservative ones: {conservative}")


if __name__ == "__main__":
    main()
