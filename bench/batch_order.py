"""Why the scheduler sorts its decode batch: bare llama.cpp decode steps of N sequences, each with
its own KV stream (as Missive runs them), with the sequence ids in order, shuffled, or with gaps.

llama.cpp runs sequences with separate KV streams in one forward pass only while their ids follow
each other in the batch; otherwise one step takes several passes. Unified KV (one buffer for all
sequences) is measured too, for comparison.

Run:  .venv/bin/python bench/batch_order.py      (about a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import ctypes
import random
import time

import llama_cpp
from llama_cpp import _internals

from missive.engines.local.model import default_model_path

SLOTS = 16
_quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)


def steps_per_second(unified: bool, order: list[int], steps: int, threads: int) -> float:
    model = _internals.LlamaModel(
        path_model=str(default_model_path()), params=llama_cpp.llama_model_default_params(), verbose=False
    )
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_seq_max, params.kv_unified = 1024 * SLOTS, SLOTS, unified
    params.n_batch = params.n_ubatch = 256
    params.n_threads = params.n_threads_batch = threads
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    context = _internals.LlamaContext(model=model, params=params, verbose=False)
    batch = _internals.LlamaBatch(n_tokens=256, embd=0, n_seq_max=1)
    prompt = model.tokenize(b"<|im_start|>user\nTell me a long story.<|im_end|>\n<|im_start|>assistant\n", False, True)

    def add(token: int, position: int, seq_id: int) -> None:
        raw = batch.batch
        i = raw.n_tokens
        raw.token[i], raw.pos[i], raw.n_seq_id[i], raw.logits[i] = token, position, 1, True
        raw.seq_id[i][0] = seq_id
        raw.n_tokens = i + 1

    for seq_id in order:
        batch.reset()
        for position, token in enumerate(prompt):
            add(token, position, seq_id)
        llama_cpp.llama_decode(context.ctx, batch.batch)
    position = len(prompt)
    started = time.perf_counter()
    for step in range(steps):
        batch.reset()
        for seq_id in order:
            add(1000 + step % 50, position, seq_id)
        llama_cpp.llama_decode(context.ctx, batch.batch)
        position += 1
    elapsed = time.perf_counter() - started
    context.close()
    model.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    llama_cpp.llama_log_set(_quiet, ctypes.c_void_p(0))
    n = args.sequences
    shuffled = list(range(n))
    random.Random(1).shuffle(shuffled)
    cases = [
        ("separate KV, ids in order", False, list(range(n))),
        ("separate KV, ids shuffled", False, shuffled),
        ("separate KV, a gap between ids", False, list(range(0, 2 * n, 2))),
        ("unified KV, ids in order", True, list(range(n))),
    ]
    print(f"{n} sequences, {args.threads} threads, {args.steps} decode steps each")
    for name, unified, order in cases:
        rate = steps_per_second(unified, order, args.steps, args.threads)
        print(f"  {name:<34} {rate * n:7.1f} tokens/s   ({1000 / rate:5.1f} ms a step)  order {order}")


if __name__ == "__main__":
    main()
