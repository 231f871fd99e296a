"""Single-stream decode of Missive from two source trees and of llama-server, paired request by request.

serving.py alternates the servers round by round; on a machine whose speed swings by a factor of two
within a minute (seen on 2026-12-08: one server's single requests read 37 to 138 tok/s in one run) a
round is too long to pair. Here the three servers (Missive from --base, Missive from this tree,
llama-server) each serve one streamed request in turn, the order rotating, for --turns turns; each
ratio is taken within a turn and the median of the turns is printed, with each server's median.

Run from the repository root, with the older tree checked out beside it (e.g. `git worktree add`):
    .venv/bin/python bench/decode_ab.py --base ../older/src [--turns 50] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
from collections.abc import Iterator

import httpx
import serving


@contextlib.contextmanager
def python_path(path: str) -> Iterator[None]:
    """PYTHONPATH for the servers started inside: `missive` imports from `path`."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


async def turns(targets: list[serving.Target], count: int, max_tokens: int) -> dict[str, list[float]]:
    speeds: dict[str, list[float]] = {target.name: [] for target in targets}
    async with httpx.AsyncClient(timeout=120) as client:
        for turn in range(count):
            shift = turn % len(targets)
            for target in targets[shift:] + targets[:shift]:
                result = await serving.stream(client, target, serving.story(turn, max_tokens, target.name))
                speeds[target.name].append(result.decode_tps or float("nan"))
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the source tree (its src/) Missive is compared with")
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    print(f"CPU: {os.cpu_count()} cores; instruction sets: {serving.instruction_sets()}")
    with contextlib.ExitStack() as stack:
        with python_path(args.base):
            base = stack.enter_context(serving.missive(name="base"))
        this = stack.enter_context(serving.missive(name="this tree"))
        peer = stack.enter_context(serving.llama_server())
        speeds = asyncio.run(turns([base, this, peer], args.turns, args.max_tokens))

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(speeds[a], speeds[b], strict=True))

    for name, values in speeds.items():
        print(f"{name:14s} decode tok/s median {statistics.median(values):7.1f}  (min {min(values):.1f}, max {max(values):.1f})")
    print(f"paired medians over {args.turns} turns: this tree / base {paired('this tree', 'base'):.3f}, "
          f"this tree / llama-server {paired('this tree', 'llama-server'):.3f}, "
          f"base / llama-server {paired('base', 'llama-server'):.3f}")


if __name__ == "__main__":
    main()
