"""Forced tool calls: how often they finish, on the default model, through the official SDK.

A forced call (tool_choice `tool` or `any`) finishes when the response ends with
`stop_reason: "tool_use"` before max_tokens and every call's input validates against its tool's
schema (jsonschema). With `tool` it must also be exactly one call. Each request offers one tool:
Claude Code's Read, Bash and Edit input schemas, and two nested-object schemas. Every schema runs
under `tool` and `any`, at temperature 0 (each prompt once) and 1 (each prompt --samples times),
on the same fixed prompts. Requests go one at a time by default (--concurrency): with flash attention,
a sequence decoded alone and one decoded beside others get slightly different numbers once their
context passes 256 tokens, and these prompts do, so only one at a time are the temperature-0 rows
the same from run to run.

Run:  .venv/bin/python bench/forced_calls.py [--max-tokens 400] [--samples 2] [--save NAME] [--against NAME]
      (about 4 to 6 minutes on 2 cores)
--save keeps the figures in .cache/bench/forced_calls.NAME.json; --against NAME prints a saved run's
figures next to this one's (e.g. --save before on the old code, then --against before on the new).
The old code can run from an extracted copy without touching the checkout:
      git archive OLD_COMMIT src | tar -x -C DIR
      PYTHONPATH=DIR/src .venv/bin/python bench/forced_calls.py --save before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anthropic
import jsonschema

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import OUT, missive  # noqa: E402

# Claude Code 2.1.332's input schemas (descriptions stripped), shared with the tests, and two nested ones.
CLAUDE_CODE_TOOLS = Path(__file__).resolve().parents[1] / "tests" / "clients" / "claude_code_tools.json"
SCHEMAS: dict[str, dict[str, Any]] = {
    **json.loads(CLAUDE_CODE_TOOLS.read_text()),
    "plan_trip": {
        "type": "object",
        "properties": {
            "traveller": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
                "required": ["name", "email"],
            },
            "legs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "date": {"type": "string"}},
                    "required": ["from", "to"],
                },
                "minItems": 1,
            },
        },
        "required": ["traveller", "legs"],
    },
    "file_issue": {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "report": {
                "type": "object",
                "properties": {
                    "summary": {"type": "string"},
                    "steps": {"type": "array", "items": {"type": "string"}},
                    "severity": {"enum": ["low", "medium", "high"]},
                },
                "required": ["summary", "severity"],
            },
        },
        "required": ["title", "report"],
        "additionalProperties": False,
    },
}
PROMPTS = [
    "Look at the file src/server/app.py and tell me what it does.",
    "The build is failing; find out why and fix it.",
    "Rename the function load_config to read_config in config.py.",
]
CHOICES = ("tool", "any")
TEMPERATURES = (0.0, 1.0)


@dataclass
class Outcome:
    finished: bool
    calls: int
    output_tokens: int
    stop_reason: str | None


def tool_choice(kind: str, name: str) -> dict[str, str]:
    return {"type": "tool", "name": name} if kind == "tool" else {"type": "any"}


def judge(message: anthropic.types.Message, name: str, kind: str) -> Outcome:
    calls = [block for block in message.content if block.type == "tool_use"]
    validator = jsonschema.Draft202012Validator(SCHEMAS[name])
    finished = (
        message.stop_reason == "tool_use"
        and bool(calls)
        and all(call.name == name and validator.is_valid(call.input) for call in calls)
        and (kind != "tool" or len(calls) == 1)
    )
    return Outcome(finished, len(calls), message.usage.output_tokens, message.stop_reason)


async def one(
    client: anthropic.AsyncAnthropic, gate: asyncio.Semaphore, name: str, kind: str, temperature: float,
    prompt: str, max_tokens: int,
) -> Outcome:
    async with gate:
        message = await client.messages.create(
            model="smollm2",
            max_tokens=max_tokens,
            temperature=temperature,
            tools=[{"name": name, "description": f"The {name} tool.", "input_schema": SCHEMAS[name]}],
            tool_choice=tool_choice(kind, name),
            messages=[{"role": "user", "content": prompt}],
        )
    return judge(message, name, kind)


async def run(args: argparse.Namespace) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    with missive() as target:
        key = target.headers["x-api-key"]
        async with anthropic.AsyncAnthropic(base_url=target.base_url, api_key=key, max_retries=0, timeout=600) as client:
            gate = asyncio.Semaphore(args.concurrency)
            cells, tasks = [], []
            for name in SCHEMAS:
                for kind in args.choices:
                    for temperature in args.temperatures:
                        repeats = 1 if temperature == 0 else args.samples
                        for prompt in PROMPTS:
                            for _ in range(repeats):
                                cells.append(f"{name}|{kind}|{temperature:g}")
                                tasks.append(one(client, gate, name, kind, temperature, prompt, args.max_tokens))
            for cell, outcome in zip(cells, await asyncio.gather(*tasks), strict=True):
                results.setdefault(cell, []).append(asdict(outcome))
    return results


def summary(outcomes: list[dict]) -> str:
    done = sum(o["finished"] for o in outcomes)
    calls = sum(o["calls"] for o in outcomes) / len(outcomes)
    capped = sum(o["stop_reason"] == "max_tokens" for o in outcomes)
    return f"{done:>2}/{len(outcomes):<2} {calls:4.1f} {capped:>3}"


def table(results: dict[str, list[dict]], other: dict[str, list[dict]] | None, label: str) -> list[str]:
    """One row a schema, choice and temperature: this run's figures, after `other`'s when given."""
    head = "finished calls capped"
    columns = [(f"{label}: ", other)] if other is not None else []
    columns.append(("this run: " if other is not None else "", results))
    lines = [f"{'schema':<11} {'choice':<6} {'temp':<4}  " + "".join(f"{title}{head}   " for title, _ in columns).rstrip()]
    for cell in results:
        name, kind, temperature = cell.split("|")
        figures = "".join(
            f"{'':<{len(title)}}{summary(runs[cell]) if cell in runs else '':<{len(head)}}   " for title, runs in columns
        )
        lines.append(f"{name:<11} {kind:<6} {temperature:<4}  {figures}".rstrip())
    for title, runs in columns:
        total = [o for outcomes in runs.values() for o in outcomes]
        lines.append(f"{title or 'all: '}{sum(o['finished'] for o in total)}/{len(total)} finished")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--samples", type=int, default=2, help="requests per prompt at temperature 1")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--choices", nargs="+", choices=CHOICES, default=list(CHOICES))
    parser.add_argument("--temperatures", nargs="+", type=float, default=list(TEMPERATURES))
    parser.add_argument("--save", help="keep the figures as .cache/bench/forced_calls.NAME.json")
    parser.add_argument("--against", help="print a saved run's figures next to this one's")
    args = parser.parse_args()
    started = time.monotonic()
    results = asyncio.run(run(args))
    elapsed = time.monotonic() - started
    other = json.loads((OUT / f"forced_calls.{args.against}.json").read_text()) if args.against else None

    print(f"\nmax_tokens {args.max_tokens}, {len(PROMPTS)} prompts, {args.samples} samples each at temperature 1\n")
    print("\n".join(table(results, other, args.against or "")))
    print(f"{elapsed:.0f} s")
    if args.save:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"forced_calls.{args.save}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
