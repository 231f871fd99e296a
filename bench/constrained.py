"""Constrained decoding cost: decode tokens/s with a JSON-schema grammar versus without, same run.

Three kinds of request to one Missive server, one at a time, each generating up to --max-tokens:
  free        plain text
  structured  output_config.format with a JSON schema (an array of records), grammar from token 1
  tool        a forced tool call (tool_choice any) whose input schema is the same
Decode tokens/s counts tokens after the first, from the stream's deltas.

Run:  .venv/bin/python bench/constrained.py [--requests 5] [--max-tokens 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import FRESH_CONNECTIONS, missive, stream  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "books": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "author": {"type": "string"}, "year": {"type": "integer"}},
                "required": ["title", "author", "year"],
            },
        }
    },
    "required": ["books"],
}
PROMPT = "List twenty classic novels with their authors and years."


def bodies(max_tokens: int) -> dict[str, dict]:
    base = {"model": "smollm2", "max_tokens": max_tokens, "stream": True, "temperature": 0,
            "messages": [{"role": "user", "content": PROMPT}]}
    return {
        "free": base,
        "structured": {**base, "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
        "tool": {**base, "tools": [{"name": "save_books", "description": "Save a list of books.", "input_schema": SCHEMA}],
                 "tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
    }


async def run(requests: int, max_tokens: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with missive() as target:
        async with httpx.AsyncClient(timeout=600, limits=FRESH_CONNECTIONS) as client:
            for kind, body in bodies(max_tokens).items():
                await stream(client, target, {**body, "max_tokens": 8})  # warm-up
                rates = []
                for i in range(requests):
                    body = json.loads(json.dumps(body))
                    body["messages"][0]["content"] = f"{PROMPT} ({i})"
                    result = await stream(client, target, body)
                    if result.decode_tps:
                        rates.append(result.decode_tps)
                figures[kind] = statistics.median(rates) if rates else float("nan")
                print(f"  {kind:<11} decode tokens/s (median of {len(rates)}): {figures[kind]:.1f}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=200)
    args = parser.parse_args()
    figures = asyncio.run(run(args.requests, args.max_tokens))
    for kind in ("structured", "tool"):
        print(f"{kind} / free: {figures[kind] / figures['free']:.2f}")


if __name__ == "__main__":
    main()
