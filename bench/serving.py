"""Serving benchmark: Missive next to llama.cpp's llama-server, same model, threads and parallel slots.

Both servers are started by this script, one at a time (two llama.cpp engines on the same cores
collapse each other), and driven by the same client over their Anthropic `/v1/messages` route with
streaming requests. Figures:

  single     one stream at a time: time to first token, decode tokens/s (after the first token)
  c=N        N clients, each sending streaming requests back to back: aggregate output tokens/s,
             time to first token p50/p95
  cached     a ~1,600-token system prompt: time to first token uncached (first request) and cached
             (later requests with other questions; Missive marks the prefix with cache_control,
             llama-server reuses its slot's prefix on its own)
  overload   many more clients than slots: time to first token p95 of the requests served, and how
             many were refused (Missive sheds with 529 past its queue; llama-server queues everything)

Both servers stay up through the run and take turns figure by figure (A B, then B A, ...): the
machine's speed drifts by 20% and more over minutes, and alternating makes the drift weigh on both.
Each figure is the median of its rounds.

Run:  .venv/bin/python bench/serving.py            (3 rounds, about 15 minutes on 2 cores)
      .venv/bin/python bench/serving.py --quick    (fewer requests, one round, about 3 minutes)
      .venv/bin/python bench/serving.py --isolation   (adds Missive with its engine in the API process,
                                                      `local.isolate = false`: what the split costs)
      .venv/bin/python bench/serving.py --proxy       (adds Missive in front of that same llama-server,
                                                      through its OpenAI-compatible engine, and that
                                                      llama-server driven directly over the same route,
                                                      /v1/chat/completions (llama-server-chat): what
                                                      the front costs)
Figures are printed side by side with their ratio (missive / llama-server) and kept, with every
round's value, in .cache/bench/serving.json. Compare figures only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import llamacpp  # noqa: E402  (tests/llamacpp.py: starts llama-server on the default model)

from missive.engines.local.default_model import default_model_path  # noqa: E402

OUT = ROOT / ".cache" / "bench"
THREADS = 2
# A new connection per request, for both servers: llama-server (this version) exits when a kept-alive
# connection sends a second streaming request.
FRESH_CONNECTIONS = httpx.Limits(max_connections=64, max_keepalive_connections=0)
PARALLEL = 8
CONTEXT_PER_SLOT = 2048
UNIFIED_KV = os.environ.get("BENCH_UNIFIED_KV") == "1"  # Missive's unified_kv setting, for comparison
TOPICS = ["a lighthouse", "a river", "the moon", "a clockmaker", "a desert", "a violin", "a glacier", "a market",
          "a comet", "an orchard", "a harbour", "a library", "a volcano", "a forest", "a bridge", "a garden"]
SYSTEM = ("You are the reference librarian of a large public library. Answer questions about books, "
          "authors, genres and reading habits clearly and kindly. ") * 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Target:
    name: str
    base_url: str
    headers: dict[str, str]
    cache_control: bool  # mark the system prompt (Missive); llama-server ignores the field anyway
    chat_completions: bool = False  # driven over /v1/chat/completions instead of /v1/messages
    pid: int | None = None  # the server's process, where this script started it


@contextlib.contextmanager
def missive(max_queue: int = 32, isolate: bool = True, parallel: int = PARALLEL, context: int = CONTEXT_PER_SLOT,
            local: str = "", name: str | None = None) -> Iterator[Target]:
    """Missive on the default model; `local` holds more `[local]` settings (TOML lines)."""
    with tempfile.TemporaryDirectory() as data:
        config = Path(data) / "missive.toml"
        config.write_text(
            f'[local]\nthreads = {THREADS}\nparallel = {parallel}\nmax_queue = {max_queue}\n'
            f'unified_kv = {str(UNIFIED_KV).lower()}\nisolate = {str(isolate).lower()}\n{local}\n'
            f'[[models]]\nid = "smollm2"\ncontext_window = {context}\n'
        )
        env = {**os.environ, "MISSIVE_DATA_DIR": data, "MISSIVE_CONFIG": str(config), "MISSIVE_DEFAULT_MODEL": "smollm2"}
        created = subprocess.run([sys.executable, "-m", "missive", "keys", "create", "--name", "bench"],
                                 env=env, capture_output=True, text=True, check=True)
        key = created.stdout.strip().splitlines()[-1]
        port = free_port()
        cmd = [sys.executable, "-m", "missive", "serve", "--port", str(port), "--log-level", "warning"]
        with _process(cmd, env) as process:
            name = name or ("missive" if isolate else "missive-inproc")
            target = Target(name, f"http://127.0.0.1:{port}", {"x-api-key": key}, True, pid=process.pid)
            _wait_ready(f"{target.base_url}/v1/models", {**target.headers, "anthropic-version": "2023-06-01"})
            yield target


@contextlib.contextmanager
def missive_proxy(upstream: str, context: int = CONTEXT_PER_SLOT, env: dict[str, str] | None = None) -> Iterator[Target]:
    """Missive with no model of its own, serving llama-server's through the OpenAI-compatible engine; `env`
    adds to its environment."""
    with tempfile.TemporaryDirectory() as data:
        config = Path(data) / "missive.toml"
        config.write_text(
            f'default_model = "smollm2"\nmodels = []\n\n[[engines]]\nname = "llama-server"\nkind = "openai"\n'
            f'url = "{upstream}"\nmax_concurrency = 0\n\n[[engines.models]]\nid = "smollm2"\n'
            f'context_window = {context}\n'
        )
        env = {**os.environ, **(env or {}), "MISSIVE_DATA_DIR": data, "MISSIVE_CONFIG": str(config)}
        created = subprocess.run([sys.executable, "-m", "missive", "keys", "create", "--name", "bench"],
                                 env=env, capture_output=True, text=True, check=True)
        key = created.stdout.strip().splitlines()[-1]
        port = free_port()
        cmd = [sys.executable, "-m", "missive", "serve", "--port", str(port), "--log-level", "warning"]
        with _process(cmd, env) as process:
            target = Target("missive-proxy", f"http://127.0.0.1:{port}", {"x-api-key": key}, True, pid=process.pid)
            _wait_ready(f"{target.base_url}/v1/models", {**target.headers, "anthropic-version": "2023-06-01"})
            yield target


@contextlib.contextmanager
def llama_server(parallel: int = PARALLEL, context: int = CONTEXT_PER_SLOT, name: str = "llama-server") -> Iterator[Target]:
    binary = subprocess.run(["scripts/llama_server"], cwd=ROOT, capture_output=True, text=True, check=True)
    port = free_port()
    args = ("-t", str(THREADS), "-tb", str(THREADS), "-np", str(parallel), "-c", str(parallel * context),
            "-fa", "on")
    with llamacpp.start(port, *args, binary=ROOT / binary.stdout.strip()):
        yield Target(name, f"http://127.0.0.1:{port}", {}, False)


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_ready(url: str, headers: dict[str, str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


@dataclass
class Result:
    status: int
    ttft: float = 0.0  # seconds from sending to the first text delta
    decode_tps: float | None = None  # tokens/s after the first token
    output_tokens: int = 0
    cached_tokens: int = 0


async def stream(client: httpx.AsyncClient, target: Target, body: dict) -> Result:
    if target.chat_completions:
        return await chat_stream(client, target, body)
    sent = time.monotonic()
    first = last = None
    output, cached = 0, 0
    headers = {**target.headers, "anthropic-version": "2023-06-01"}
    async with client.stream("POST", f"{target.base_url}/v1/messages", json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return Result(response.status_code)
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "content_block_delta" and (event["delta"].get("text") or event["delta"].get("partial_json")):
                last = time.monotonic()
                first = first or last
            elif event["type"] == "message_start":
                cached = event["message"]["usage"].get("cache_read_input_tokens") or 0
            elif event["type"] == "message_delta":
                output = event["usage"]["output_tokens"]
    if first is None:
        return Result(200, output_tokens=output)
    tps = (output - 1) / (last - first) if output > 16 and last > first else None
    return Result(200, first - sent, tps, output, cached)


def chat_body(body: dict) -> dict:
    """The same request as OpenAI chat completions (what Missive's OpenAI-compatible engine sends)."""
    system = body.get("system")
    text = system if isinstance(system, str) or system is None else "".join(block["text"] for block in system)
    return {"model": body["model"], "max_tokens": body["max_tokens"], "temperature": body["temperature"],
            "stream": True, "stream_options": {"include_usage": True},
            "messages": ([{"role": "system", "content": text}] if text else []) + body["messages"]}


async def chat_stream(client: httpx.AsyncClient, target: Target, body: dict) -> Result:
    sent = time.monotonic()
    first = last = None
    output, cached = 0, 0
    async with client.stream("POST", f"{target.base_url}/v1/chat/completions", json=chat_body(body)) as response:
        if response.status_code != 200:
            await response.aread()
            return Result(response.status_code)
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                last = time.monotonic()
                first = first or last
            if chunk.get("usage"):
                output = chunk["usage"]["completion_tokens"]
                cached = (chunk["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    if first is None:
        return Result(200, output_tokens=output)
    tps = (output - 1) / (last - first) if output > 16 and last > first else None
    return Result(200, first - sent, tps, output, cached)


def story(i: int, max_tokens: int, tag: str = "") -> dict:
    """A prompt new to both servers in each figure and round (`tag`), so none is served from an earlier one's cache."""
    return {"model": "smollm2", "max_tokens": max_tokens, "stream": True, "temperature": 0,
            "messages": [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}. ({tag}{i})"}]}


async def load(
    target: Target, clients: int, per_client: int, max_tokens: int, tag: str = ""
) -> tuple[list[Result], float]:
    """`clients` workers, each sending `per_client` requests back to back."""
    async with httpx.AsyncClient(timeout=600, limits=FRESH_CONNECTIONS) as client:
        async def worker(w: int) -> list[Result]:
            return [await stream(client, target, story(w * 100 + j, max_tokens, tag)) for j in range(per_client)]

        await stream(client, target, story(9999, 8))  # warm-up
        started = time.monotonic()
        results = [r for rs in await asyncio.gather(*(worker(w) for w in range(clients))) for r in rs]
        return results, time.monotonic() - started


async def cached_prefix(target: Target, questions: int, round_: int) -> tuple[float, list[Result]]:
    """A system prompt new to both servers in each round (the first request is a miss), then hits."""
    text = f"(Round {round_}.) " + SYSTEM
    system: str | list = text
    if target.cache_control:
        system = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]
    async with httpx.AsyncClient(timeout=600, limits=FRESH_CONNECTIONS) as client:
        def body(q: str) -> dict:
            return {"model": "smollm2", "max_tokens": 8, "stream": True, "temperature": 0, "system": system,
                    "messages": [{"role": "user", "content": q}]}

        uncached = await stream(client, target, body("Which book should I read first?"))
        hits = [await stream(client, target, body(f"Recommend a book about {topic}.")) for topic in TOPICS[:questions]]
        return uncached.ttft, hits


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def phase(target: Target, name: str, args: argparse.Namespace, round_: int) -> dict[str, float]:
    """One figure group on one server: 'single', 'c=N' or 'cached'."""
    if name == "single":
        single, _ = await load(target, 1, args.single, args.max_tokens, f"{name}.{round_}.")
        return {"single: time to first token p50 (ms)": 1000 * pct([r.ttft for r in single], 0.5),
                "single: decode tokens/s (median)": statistics.median(r.decode_tps for r in single if r.decode_tps)}
    if name == "cached":
        uncached, hits = await cached_prefix(target, args.questions, round_)
        return {"cached prefix: prompt tokens cached (median)": statistics.median(r.cached_tokens for r in hits),
                "cached prefix: uncached time to first token (ms)": 1000 * uncached,
                "cached prefix: cached time to first token p50 (ms)": 1000 * pct([r.ttft for r in hits], 0.5)}
    clients = int(name.removeprefix("c="))
    results, wall = await load(target, clients, args.per_client, args.max_tokens, f"{name}.{round_}.")
    ok = [r for r in results if r.status == 200]
    return {f"{name}: aggregate output tokens/s": sum(r.output_tokens for r in ok) / wall,
            f"{name}: time to first token p50 (ms)": 1000 * pct([r.ttft for r in ok], 0.5),
            f"{name}: time to first token p95 (ms)": 1000 * pct([r.ttft for r in ok], 0.95)}


async def overload(target: Target, args: argparse.Namespace) -> dict[str, float]:
    results, _ = await load(target, args.overload, 1, 64)
    ok = [r for r in results if r.status == 200]
    return {f"overload {args.overload} clients: served": len(ok),
            f"overload {args.overload} clients: refused (529)": sum(r.status == 529 for r in results),
            f"overload {args.overload} clients: served TTFT p95 (ms)": 1000 * pct([r.ttft for r in ok], 0.95)}


# --- long context and speculative decoding ---------------------------------------------------------

LONG_CONTEXT = 8192  # one slot of this many tokens, in both servers
LONG_LENGTHS = (2000, 4000, 7000)
_ROWS = [f"the {c} {p} keeps {n} lanterns by the {w}" for c in ("red", "grey", "tall", "old")
         for p in ("keeper", "sailor", "baker", "weaver", "miller") for n in ("two", "seven", "nine")
         for w in ("harbour", "mill", "bridge", "chapel")]
PASSAGE = " ".join(f"Line {i}: {row}." for i, row in enumerate(_ROWS[:60]))  # about 1k tokens, no line twice
COPY = f"Repeat this text exactly, line by line:\n\n{PASSAGE}"


def instruction_sets() -> str:
    """The SIMD extensions the CPU reports (the kernels llama.cpp can use)."""
    wanted = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx512vbmi", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "sve"]
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                return " ".join(flag for flag in wanted if flag in flags)
    return "unknown"


def engine_counters(target: Target) -> tuple[float, float]:
    """Missive's speculative tokens drafted and accepted so far, from its /metrics."""
    text = httpx.get(f"{target.base_url}/metrics", timeout=10).text

    def total(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    return total("missive_speculative_draft_tokens_total"), total("missive_speculative_accepted_tokens_total")


def long_prompt(tokens: int, tag: str) -> str:
    """Text of about `tokens` tokens (about 17 a line for this tokenizer), new in each round (`tag` first)."""
    lines = [f"Line {i}: {_ROWS[i % len(_ROWS)]}." for i in range(max(1, tokens // 17))]
    return f"({tag}) Here is a long list.\n" + "\n".join(lines) + "\nContinue the list with 200 more lines."


def ask(content: str, max_tokens: int) -> dict:
    return {"model": "smollm2", "max_tokens": max_tokens, "stream": True, "temperature": 0,
            "messages": [{"role": "user", "content": content}]}


async def long_phase(target: Target, args: argparse.Namespace, round_: int) -> dict[str, float]:
    rows = {}
    async with httpx.AsyncClient(timeout=900, limits=FRESH_CONNECTIONS) as client:
        for length in args.lengths:
            result = await stream(client, target, ask(long_prompt(length, f"{target.name} {round_}"), args.long_tokens))
            rows[f"long context {length // 1000}k: decode tokens/s"] = result.decode_tps or float("nan")
    return rows


async def speculation_phase(target: Target, args: argparse.Namespace, round_: int) -> dict[str, float]:
    rows = {}
    async with httpx.AsyncClient(timeout=900, limits=FRESH_CONNECTIONS) as client:
        for task in ("copy", "prose"):
            before = engine_counters(target) if target.name.startswith("missive") else (0.0, 0.0)
            results = []
            for i in range(args.spec_requests):
                content = f"({round_}.{i}) {COPY}" if task == "copy" else story(i, 0)["messages"][0]["content"]
                results.append(await stream(client, target, ask(content, args.spec_tokens)))
            rows[f"speculation {task}: decode tokens/s (median)"] = statistics.median(
                r.decode_tps for r in results if r.decode_tps) if any(r.decode_tps for r in results) else float("nan")
            if target.name.startswith("missive"):
                drafted, accepted = (now - then for now, then in zip(engine_counters(target), before))
                rows[f"speculation {task}: acceptance rate (%)"] = 100 * accepted / drafted if drafted else 0.0
                rows[f"speculation {task}: tokens guessed per output token (%)"] = (
                    100 * drafted / max(1, sum(r.output_tokens for r in results)))
    return rows


def group(names: list[str], starters: dict, phase_fn, args: argparse.Namespace, rounds: int,
          record) -> None:
    """Start the servers of one group, alternate them round by round (A B, then B A), stop them."""
    with contextlib.ExitStack() as stack:
        targets = {name: stack.enter_context(starters[name]()) for name in names}
        for round_ in range(rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                time.sleep(1)
                record(name, asyncio.run(phase_fn(targets[name], args, round_)))


def table(figures: dict[str, dict[str, float]], ratios: list[tuple[str, str]], title: str) -> None:
    names = [n for n in figures if figures[n]]
    keys = list(dict.fromkeys(k for n in names for k in figures[n]))
    ratios = [(a, b) for a, b in ratios if a in figures and b in figures]
    print(f"\n{title}; ratios are the first over the second")
    print(f"{'figure':<58}" + "".join(f" {name:>16}" for name in names) + "".join(f" {a + '/' + b:>30}" for a, b in ratios))
    for key in keys:
        def value(name: str) -> float:
            return figures[name].get(key, float("nan"))

        cells = "".join(f" {value(name):>16.1f}" for name in names)
        cells += "".join(f" {value(a) / value(b) if value(b) else float('nan'):>30.2f}" for a, b in ratios)
        print(f"{key:<58}" + cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["missive", "llama-server"])
    parser.add_argument("--isolation", action="store_true", help="also Missive with its engine in the API process")
    parser.add_argument("--proxy", action="store_true", help="also Missive in front of the same llama-server")
    parser.add_argument("--quick", action="store_true", help="fewer requests per figure, one round")
    parser.add_argument("--rounds", type=int, help="rounds per figure (default 3, or 1 with --quick)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--no-long", action="store_true", help="skip the long-context decode figures")
    parser.add_argument("--no-speculative", action="store_true", help="skip the speculative decoding figures")
    parser.add_argument("--extra-only", action="store_true", help="only the long-context and speculative figures")
    args = parser.parse_args()
    args.lengths = LONG_LENGTHS[:1] if args.quick else LONG_LENGTHS
    args.long_tokens = 32 if args.quick else 96
    args.spec_requests = 1 if args.quick else 3
    args.spec_tokens = 64 if args.quick else 256
    print(f"CPU: {os.cpu_count()} cores; instruction sets: {instruction_sets()}", flush=True)
    args.single = 3 if args.quick else 5
    args.per_client = 1 if args.quick else 2
    args.questions = 4 if args.quick else 8
    args.overload = 48
    rounds = args.rounds or (1 if args.quick else 3)
    names = [n for n in ("missive", "llama-server") if not args.only or args.only == n]
    names += ["missive-inproc"] if args.isolation else []
    names += ["llama-server-chat", "missive-proxy"] if args.proxy and "llama-server" in names else []
    targets: dict[str, Target] = {}
    starters = {"missive": missive, "llama-server": llama_server, "missive-inproc": lambda: missive(isolate=False),
                "missive-proxy": lambda: missive_proxy(targets["llama-server"].base_url),
                "llama-server-chat": lambda: contextlib.nullcontext(
                    Target("llama-server-chat", targets["llama-server"].base_url, {}, False, chat_completions=True))}
    values: dict[str, dict[str, list[float]]] = {n: {} for n in names}

    def record(name: str, rows: dict[str, float]) -> None:
        for key, value in rows.items():
            values.setdefault(name, {}).setdefault(key, []).append(value)
            print(f"  {name:<13} {key:<50} {value:10.1f}", flush=True)

    # Both servers stay up, idle when not measured; each figure alternates between them (A B, then
    # B A), so that the machine's drift over the run weighs on both alike.
    with contextlib.ExitStack() as stack:
        for name in names if not args.extra_only else []:  # in order: the proxy's upstream is the llama-server started before it
            targets[name] = stack.enter_context(starters[name]())
        for phase_name in ["single", "c=1", "c=4", "c=8", "c=16", "cached"] if not args.extra_only else []:
            for round_ in range(rounds):
                for name in names if round_ % 2 == 0 else names[::-1]:  # A B (C), then (C) B A
                    time.sleep(1)  # let the other engine's threads go idle
                    record(name, asyncio.run(phase(targets[name], phase_name, args, round_)))
    for name in [n for n in names if n not in ("missive-proxy", "llama-server-chat") and not args.extra_only]:  # overload with a short queue, so that shedding shows
        shedding = {"missive": lambda: missive(max_queue=8), "missive-inproc": lambda: missive(8, isolate=False)}
        with shedding.get(name, llama_server)() as target:
            record(name, asyncio.run(overload(target, args)))

    # Long context: one slot of LONG_CONTEXT tokens in each server; Missive with its KV cache in f16 and in q8_0.
    long_starters = {
        "missive-long": lambda: missive(parallel=1, context=LONG_CONTEXT, name="missive-long"),
        "missive-long-q8": lambda: missive(parallel=1, context=LONG_CONTEXT, local='kv_cache_type = "q8_0"',
                                           name="missive-long-q8"),
        "llama-server-long": lambda: llama_server(1, LONG_CONTEXT, "llama-server-long"),
    }
    if not args.no_long:
        group(list(long_starters), long_starters, long_phase, args, rounds, record)
    # Speculative decoding: Missive with it on and off (both with a q8_0 KV cache, where it is exact at any
    # length), and llama-server, on a copy-heavy task and on prose, one stream at a time.
    spec_starters = {
        "missive-q8": lambda: missive(local='kv_cache_type = "q8_0"', name="missive-q8"),
        "missive-spec": lambda: missive(local='kv_cache_type = "q8_0"\nspeculative = true', name="missive-spec"),
        "llama-server": llama_server,
    }
    if not args.no_speculative:
        group(list(spec_starters), spec_starters, speculation_phase, args, rounds, record)

    figures = {name: {key: statistics.median(v) for key, v in rows.items()} for name, rows in values.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serving.json").write_text(json.dumps({"figures": figures, "rounds": values}, indent=2))
    if not args.extra_only and "llama-server" in figures and len(figures) > 1:
        ratios = [(a, b) for a, b in (("missive", "llama-server"), ("missive", "missive-inproc"),
                                      ("missive-proxy", "llama-server-chat")) if a in figures and b in figures]
        print(f"\nmedian of {rounds} round(s); ratios are the first over the second")
        print(f"{'figure':<50}" + "".join(f" {name:>14}" for name in figures)
              + "".join(f" {a + '/' + b:>28}" for a, b in ratios))
        for key in figures["llama-server"]:
            def value(name: str) -> float:
                return figures[name].get(key, float("nan"))

            print(f"{key:<50}" + "".join(f" {value(name):>14.1f}" for name in figures)
                  + "".join(f" {value(a) / value(b) if value(b) else float('nan'):>28.2f}" for a, b in ratios))
    long_figures = {name: figures.get(name, {}) for name in long_starters}
    if any(long_figures.values()):
        table(long_figures, [("missive-long", "llama-server-long"), ("missive-long-q8", "llama-server-long"),
                             ("missive-long-q8", "missive-long")],
              f"long context (1 slot x {LONG_CONTEXT} tokens), median of {rounds} round(s)")
    spec_figures = {name: {k: v for k, v in figures.get(name, {}).items() if k.startswith("speculation")}
                    for name in spec_starters}
    if any(spec_figures.values()):
        table(spec_figures, [("missive-spec", "missive-q8"), ("missive-spec", "llama-server"),
                             ("missive-q8", "llama-server")], f"speculative decoding, median of {rounds} round(s)")
    print(f"\n{THREADS} threads, {PARALLEL} parallel slots x {CONTEXT_PER_SLOT} tokens, unified_kv={UNIFIED_KV}, model {default_model_path().name}")
    print(f"CPU: {os.cpu_count()} cores; instruction sets: {instruction_sets()}")


if __name__ == "__main__":
    main()
