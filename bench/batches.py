"""Message Batches benchmark: what a batch gets through, and what it costs the interactive requests beside it.

One Missive server of its own (the embedded model, `serving.py`'s threads, parallel slots and context;
the batch worker's concurrency is the engine's `parallel` unless --config sets `batches.concurrency`),
driven through the official `anthropic` SDK for the batches and over `/v1/messages` for the rest:

  throughput   N short requests (--requests, distinct prompts, max_tokens 16, temperature 0): once as
               one batch, timed from `batches.create` to `processing_status: ended` (polled), and once
               sent by --clients (8) concurrent clients to `/v1/messages`, not streamed. Wall time,
               requests/s and output tokens/s of each, and the ratio batch / interactive.
  latency      time to first token p50/p95 of --latency-requests interactive streams (max_tokens 8, by
               --latency-clients clients, back to back): with no batch running, then beside a batch of
               --batch-size requests (conftest's counting conversation, which runs to its max_tokens,
               --batch-max-tokens 128) that holds every engine slot, decoding, before the first stream
               is sent and still has requests queued after the last (checked in the server's database;
               else the figure is marked: raise --batch-size). The batch is then cancelled and drained
               before the next figure. Also the batch sequences parked for the streams (the engine's
               `missive_engine_preemptions`), per stream. Target: under batch / idle at most 1.2.

Both modes of each figure take turns round by round (A B, then B A, ...), on the same server, and each
figure is the median of its rounds (--rounds): the machine's speed drifts, alternating makes the drift
weigh on both. Every request's prompt carries its figure, mode and round, so that no mode is served
from the prompt cache of another.

Run:  .venv/bin/python bench/batches.py             (200 requests, 3 rounds, about 10 minutes on 2 cores)
      .venv/bin/python bench/batches.py --quick     (a smoke test: tiny sizes, one round, about 1 minute)
      .venv/bin/python bench/batches.py --config local.unified_kv=true --config batches.concurrency=4
Figures, with every round's value, are kept in .cache/bench/batches.json, the server's log in
.cache/bench/batches-server.log. Compare figures only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import anthropic
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import COUNTING, Server, launch, stop  # noqa: E402
from serving import CONTEXT_PER_SLOT, OUT, PARALLEL, THREADS, TOPICS, Result, Target, pct, stream  # noqa: E402

from missive.engines.local.default_model import default_model_path  # noqa: E402

MODEL = "smollm2-135m-instruct"
TARGET_RATIO = 1.2  # interactive time to first token under a batch, over idle, at most


# --- the server ------------------------------------------------------------------------------------


def config_text(overrides: list[str]) -> str:
    """serving.py's Missive, with `section.key=value` overrides (the value in TOML: 4, true, "text")."""
    sections: dict[str, dict[str, str]] = {
        "": {"default_model": f'"{MODEL}"'},
        "local": {"threads": str(THREADS), "parallel": str(PARALLEL)},
        "[models]": {"id": f'"{MODEL}"', "context_window": str(CONTEXT_PER_SLOT)},
        "batches": {},
    }
    for override in overrides:
        key, sep, value = override.partition("=")
        section, dot, name = key.strip().rpartition(".")
        if not sep or not name:
            raise SystemExit(f"--config {override!r}: expected section.key=value, e.g. local.parallel=4")
        section = {"models": "[models]"}.get(section, section)
        sections.setdefault(section, {})[name] = value.strip()
    lines: list[str] = []
    for section, values in sections.items():
        if section and not values:
            continue
        if section:
            lines.append(f"\n[{section}]")
        lines += [f"{name} = {value}" for name, value in values.items()]
    text = "\n".join(lines).lstrip() + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SystemExit(f"--config: the config is not valid TOML ({error}):\n{text}") from None
    return text


def slots_of(config: str) -> tuple[int, int]:
    """(the engine's parallel sequences, the batch worker's concurrency)."""
    parsed = tomllib.loads(config)
    parallel = parsed.get("local", {}).get("parallel", 4)
    concurrency = parsed.get("batches", {}).get("concurrency")
    return parallel, parallel if concurrency is None else concurrency


def engine_metrics(target: Target) -> dict[str, float]:
    """The engine's gauges and counters of interest, summed over models."""
    wanted = {"missive_active_sequences": "active", "missive_engine_preemptions_total": "preemptions",
              "missive_output_tokens_total": "output tokens"}
    found = dict.fromkeys(wanted.values(), 0.0)
    for line in httpx.get(f"{target.base_url}/metrics", timeout=10).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            found[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return found


def wait_active(target: Target, want: int, at_least: bool, timeout: float = 300) -> dict[str, float]:
    """Until the engine runs at least (or at most) `want` sequences; returns its metrics then."""
    started = time.monotonic()
    while True:
        found = engine_metrics(target)
        if (found["active"] >= want) if at_least else (found["active"] <= want):
            return found
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the engine runs {found['active']:g} sequences after {timeout} s, waiting for {want}")
        time.sleep(0.1)


def wait_decoding(target: Target, slots: int, timeout: float = 300) -> None:
    """Until `slots` sequences run and have decoded two tokens each, on average: their prompts are in."""
    start = wait_active(target, slots, at_least=True, timeout=timeout)["output tokens"]
    deadline = time.monotonic() + timeout
    while engine_metrics(target)["output tokens"] < start + 2 * slots:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the batch did not start decoding within {timeout} s")
        time.sleep(0.1)


def queued(server: Server, batch_id: str) -> int:
    """The batch's requests not yet claimed by the worker (read from the server's SQLite database:
    the API counts every request as processing until the batch ends)."""
    with sqlite3.connect(f"file:{server.data_dir / 'missive.db'}?mode=ro", uri=True, timeout=30) as db:
        return db.execute("SELECT count(*) FROM batch_requests WHERE batch_id = ? AND status = 'queued'",
                          (batch_id,)).fetchone()[0]


# --- requests --------------------------------------------------------------------------------------


def ask(i: int, max_tokens: int, tag: str, stream_: bool = False) -> dict[str, Any]:
    """A short prompt, new in each figure, mode and round (`tag` comes first, so no prefix is shared
    beyond the chat template's)."""
    text = f"({tag}{i}) Write one sentence about {TOPICS[i % len(TOPICS)]}."
    body: dict[str, Any] = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
                            "messages": [{"role": "user", "content": text}]}
    return {**body, "stream": True} if stream_ else body


def long_ask(i: int, max_tokens: int, tag: str) -> dict[str, Any]:
    """Batch work that runs to its max_tokens (conftest's counting conversation; a short prompt's
    answer ends after 20 to 40 tokens and would leave slots idle between requests)."""
    first = {**COUNTING[0], "content": f"({tag}{i}) {COUNTING[0]['content']}"}
    return {"model": MODEL, "max_tokens": max_tokens, "temperature": 0, "messages": [first, *COUNTING[1:]]}


def create_batch(client: anthropic.Anthropic, n: int, max_tokens: int, tag: str, long: bool = False) -> Any:
    make = long_ask if long else ask
    requests = [{"custom_id": f"r{i}", "params": make(i, max_tokens, tag)} for i in range(n)]
    return client.messages.batches.create(requests=requests)  # type: ignore[arg-type]


def wait_ended(client: anthropic.Anthropic, batch_id: str, timeout: float = 1800) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch {batch_id} did not end within {timeout} s: {batch.request_counts}")
        time.sleep(0.1)


async def message(client: httpx.AsyncClient, target: Target, body: dict[str, Any]) -> tuple[int, int]:
    """(status, output tokens) of one non-streamed request."""
    headers = {**target.headers, "anthropic-version": "2023-06-01"}
    response = await client.post(f"{target.base_url}/v1/messages", json=body, headers=headers)
    if response.status_code != 200:
        return response.status_code, 0
    return 200, response.json()["usage"]["output_tokens"]


async def clients_send(target: Target, clients: int, bodies: list[dict[str, Any]], streamed: bool) -> list[Any]:
    """`clients` workers taking the bodies in turn, each sending its next one when the last is answered."""
    todo = iter(bodies)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as client:
        async def worker() -> list[Any]:
            return [await (stream(client, target, body) if streamed else message(client, target, body)) for body in todo]

        return [r for rs in await asyncio.gather(*(worker() for _ in range(clients))) for r in rs]


# --- figures ---------------------------------------------------------------------------------------


def throughput(
    mode: str, server: Server, target: Target, client: anthropic.Anthropic, args: argparse.Namespace, tag: str
) -> dict[str, float]:
    n = args.requests
    started = time.monotonic()
    if mode == "batch":
        batch = wait_ended(client, create_batch(client, n, args.max_tokens, tag).id)
        wall = time.monotonic() - started
        results = [line.result for line in client.messages.batches.results(batch.id)]
        ok = [r for r in results if r.type == "succeeded"]
        tokens = sum(r.message.usage.output_tokens for r in ok)  # type: ignore[union-attr]
        failed = len(results) - len(ok)
    else:
        bodies = [ask(i, args.max_tokens, tag) for i in range(n)]
        answers = asyncio.run(clients_send(target, args.clients, bodies, streamed=False))
        wall = time.monotonic() - started
        ok = [a for a in answers if a[0] == 200]
        tokens, failed = sum(a[1] for a in ok), len(answers) - len(ok)
    return {"wall time (s)": wall, "requests/s": len(ok) / wall, "output tokens/s": tokens / wall,
            "output tokens (total)": tokens, "failed requests": failed}


def latency(
    mode: str, server: Server, target: Target, client: anthropic.Anthropic, args: argparse.Namespace, tag: str
) -> dict[str, float]:
    """Interactive streams alone ('idle') or beside a batch holding every slot ('under batch')."""
    bodies = [ask(i, 8, tag, stream_=True) for i in range(args.latency_requests)]
    batch = None
    if mode == "under batch":
        batch = create_batch(client, args.batch_size, args.batch_max_tokens, "batch." + tag, long=True)
        wait_decoding(target, min(args.concurrency, args.parallel))  # the batch holds its slots
    before = engine_metrics(target)
    results: list[Result] = asyncio.run(clients_send(target, args.latency_clients, bodies, streamed=True))
    after = engine_metrics(target)
    rows: dict[str, float] = {}
    if batch is not None:
        left = queued(server, batch.id)
        rows["batch requests still queued at the end"] = left
        if not left:
            print("  ! the batch ran short: none of its requests was left queued after the last stream, so "
                  "its slots may not all have been busy throughout; raise --batch-size", flush=True)
        client.messages.batches.cancel(batch.id)
        wait_ended(client, batch.id)  # queued ones are canceled, running ones finish
        wait_active(target, 0, at_least=False)
    ok = [r for r in results if r.status == 200 and r.ttft]
    rows = {"time to first token p50 (ms)": 1000 * pct([r.ttft for r in ok], 0.5),
            "time to first token p95 (ms)": 1000 * pct([r.ttft for r in ok], 0.95),
            "failed requests": len(results) - len(ok),
            "batch sequences parked per stream": (after["preemptions"] - before["preemptions"]) / max(1, len(results)),
            **rows}
    return rows


# --- the run ---------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(title: str, names: tuple[str, str], figures: dict[str, dict[str, float]]) -> None:
    a, b = names
    print(f"\n{title:<50} {a:>14} {b:>14} {a + ' / ' + b:>28}")
    for key in figures[a] | figures[b]:
        x, y = figures[a].get(key, float("nan")), figures[b].get(key, float("nan"))
        ratio = x / y if y and x == x and y == y else float("nan")
        print(f"  {key:<48} {x:>14.1f} {y:>14.1f} {ratio:>28.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, help="requests in the throughput figure (default 200; 16 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds per figure (default 3; 1 with --quick)")
    parser.add_argument("--clients", type=int, default=8, help="interactive clients in the throughput figure")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of the throughput requests")
    parser.add_argument("--latency-requests", type=int, help="interactive streams per latency figure (default 30; 6 with --quick)")
    parser.add_argument("--latency-clients", type=int, default=1, help="clients sending them, back to back")
    parser.add_argument("--batch-size", type=int, help="requests of the batch beside them (default 64; 16 with --quick)")
    parser.add_argument("--batch-max-tokens", type=int, help="max_tokens of its requests (default 128; 64 with --quick)")
    parser.add_argument("--port", type=int, help="the server's port (default: a free one)")
    parser.add_argument("--config", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="set a server setting (TOML value), e.g. local.unified_kv=true; repeatable")
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny sizes, one round")
    args = parser.parse_args()
    args.requests = args.requests or (16 if args.quick else 200)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.latency_requests = args.latency_requests or (6 if args.quick else 30)
    args.batch_size = args.batch_size or (24 if args.quick else 64)
    args.batch_max_tokens = args.batch_max_tokens or (64 if args.quick else 128)
    config = config_text(args.config)
    args.parallel, args.concurrency = slots_of(config)

    print(f"{os.cpu_count()} CPUs, {cpu_model()}; model {default_model_path().name}")
    print("server config:\n" + "\n".join(f"  {line}" if line else "" for line in config.strip().splitlines()), flush=True)
    values: dict[str, dict[str, dict[str, list[float]]]] = {"throughput": {}, "latency": {}}
    modes = {"throughput": ("batch", "interactive"), "latency": ("under batch", "idle")}
    measure = {"throughput": throughput, "latency": latency}

    with tempfile.TemporaryDirectory(prefix="missive-bench-batches-") as root:
        process, server = launch(Path(root), config, port=args.port)
        try:
            target = Target("missive", server.base_url, {"x-api-key": server.api_key}, False)
            client = anthropic.Anthropic(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=600)
            asyncio.run(clients_send(target, 2, [ask(i, 8, "warm-up.", stream_=True) for i in range(2)], True))
            wait_ended(client, create_batch(client, 2, 8, "warm-up.batch.").id)
            for figure in ("throughput", "latency"):
                for round_ in range(args.rounds):
                    for mode in modes[figure] if round_ % 2 == 0 else modes[figure][::-1]:
                        time.sleep(1)  # let the engine's threads go idle
                        rows = measure[figure](mode, server, target, client, args, f"{figure}.{mode}.{round_}.")
                        for key, value in rows.items():
                            values[figure].setdefault(mode, {}).setdefault(key, []).append(value)
                            print(f"  {figure:<10} {mode:<12} round {round_}  {key:<40} {value:10.1f}", flush=True)
            log = server.log()
        finally:
            stop(process)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "batches-server.log").write_text(log)

    figures = {figure: {mode: {key: statistics.median(v) for key, v in rows.items()} for mode, rows in by_mode.items()}
               for figure, by_mode in values.items()}
    (OUT / "batches.json").write_text(json.dumps({"figures": figures, "rounds": values, "config": config,
                                                   "args": vars(args)}, indent=2))
    print(f"\nmedian of {args.rounds} round(s)")
    table(f"throughput: {args.requests} requests, max_tokens {args.max_tokens}",
          ("batch", "interactive"), figures["throughput"])
    print(f"  (batch: one batch, create to ended, {args.concurrency} at once; interactive: {args.clients} clients, "
          "not streamed)")
    table(f"latency: {args.latency_requests} streams, max_tokens 8", ("under batch", "idle"), figures["latency"])
    print(f"  (by {args.latency_clients} client(s); under a batch of {args.batch_size} x max_tokens "
          f"{args.batch_max_tokens}; target: under batch / idle at most {TARGET_RATIO})")
    idle, busy = figures["latency"]["idle"], figures["latency"]["under batch"]
    for key in ("time to first token p50 (ms)", "time to first token p95 (ms)"):
        ratio = busy[key] / idle[key] if idle[key] else float("nan")
        print(f"  {key}: {ratio:.2f}x {'within' if ratio <= TARGET_RATIO else 'OVER'} the target")
    print(f"\nserver log: {log.count('Traceback')} tracebacks, {log.count(' ERROR ')} ERROR lines, "
          f"{log.count('background generation parked')} batch sequences parked, "
          f"{log.count('background generation resumed')} resumed; kept in {OUT / 'batches-server.log'}")
    print(f"{os.cpu_count()} CPUs ({cpu_model()}), {args.parallel} parallel slots x {CONTEXT_PER_SLOT} tokens, "
          f"batch concurrency {args.concurrency}, model {default_model_path().name}")


if __name__ == "__main__":
    main()
