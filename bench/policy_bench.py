"""What the policy path costs: auth, rate limits and the usage ledger, behind an instant engine.

Side by side, in one run, on this machine, with the same load generator:

    upstream            an instant Anthropic-compatible server (the floor: HTTP + JSON only)
    litellm             the LiteLLM proxy (master-key auth) in front of that upstream
    missive-bare        Missive with an instant engine and the policy path stubbed out
    missive             Missive with an instant engine and the whole policy path
                        (key lookup, RPM/ITPM/OTPM buckets, ledger record opened and settled)
    missive-pg-redis    the same on PostgreSQL and Redis (--postgres URL --redis URL)
    missive-forward     Missive with the whole policy path, forwarding to that upstream through its
                        Anthropic-compatible engine (the same job as LiteLLM's)

Each target is measured at concurrency 1 (latency: p50/p99) and at --concurrency (requests/s).
"Added" is against the instant upstream for LiteLLM and missive-forward, and against missive-bare for
the policy path.

    python -m venv .cache/bench-venv && .cache/bench-venv/bin/pip install -e '.[bench]'   # LiteLLM, once
    flock /tmp/missive-bench.lock .venv/bin/python bench/policy_bench.py

LiteLLM runs from .cache/bench-venv (its pins clash with Missive's); --litellm names another binary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LITELLM_KEY = "sk-litellm-bench"
BODY = {
    "model": "claude-haiku-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Say hello."}],
}
REPLY = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "Hello there!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}
MISSIVE_CONFIG = """
default_model = "instant"
claude_aliases = true
log_level = "warning"
{database}

[rate_limits]
backend = "{limiter}"
redis_url = "{redis}"
redis_prefix = "{prefix}"
default_tier = "bench"

[rate_limits.tiers.bench]  # limits far above what the bench sends: every request is admitted, all buckets work
requests_per_minute = 1000000000
input_tokens_per_minute = 1000000000
output_tokens_per_minute = 1000000000
count_tokens_requests_per_minute = 1000000000

[pricing.models.instant]
input = 1
output = 5
"""
FORWARD_CONFIG = """
default_model = "claude-haiku-4-5"
log_level = "warning"
models = []

[[engines]]
name = "upstream"
kind = "anthropic"
url = "{upstream}"

[[engines.models]]
id = "claude-haiku-4-5"

[rate_limits]
default_tier = "unlimited"
"""


# ---- the servers (each runs in its own process) ----------------------------------------------------


def serve_upstream(port: int) -> None:
    """An instant Anthropic Messages endpoint: the same reply to every request."""
    import uvicorn

    reply = json.dumps(REPLY).encode()
    streamed = _events(REPLY)

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        stream = b'"stream":true' in body.replace(b" ", b"")  # as asked: Missive's engine always streams
        kind = b"text/event-stream" if stream else b"application/json"
        headers = [(b"content-type", kind), (b"request-id", b"req_bench")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": streamed if stream else reply})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _events(reply: dict) -> bytes:
    """The reply as the Messages API streams it."""
    usage = reply["usage"]
    start = {**reply, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": reply["content"][0]["text"]}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": usage["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


def serve_missive(port: int, bare: bool) -> None:
    """Missive over an instant engine; `bare` stubs out auth and the policy path."""
    import uvicorn

    from missive import server as missive_server
    from missive.settings import load_settings
    from missive.wire.events import BlockStart, BlockStop, Delta, Finished, Started, Usage
    from missive.wire.models import ModelCard

    class Instant:
        input_tokens = 10

        async def generate(self) -> AsyncIterator[object]:
            yield Started(Usage(input_tokens=10))
            yield BlockStart("text")
            yield Delta("text", "Hello there!")
            yield BlockStop()
            yield Finished("end_turn", Usage(input_tokens=10, output_tokens=4))

    class InstantEngine:
        name = "instant"
        signs_thinking = False

        def models(self) -> list[ModelCard]:
            return [ModelCard("instant", "Instant", 100_000, 64_000)]

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            pass

        async def count_tokens(self, generation: object) -> int:
            return 10

        async def prepare(self, generation: object) -> Instant:
            return Instant()

    if bare:
        _stub_policy(missive_server)
    settings = load_settings(port=port)
    app = missive_server.create_app(settings, engines=[InstantEngine()])  # type: ignore[list-item]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _stub_policy(missive_server: object) -> None:
    from missive.gateway.auth import Principal
    from missive.routes import context

    class Record:
        service_tier = "standard"

    class Admitted:
        headers: dict[str, str] = {}
        record = Record()

        async def open(self, *args: object) -> None:
            pass

        async def release(self) -> None:
            pass

        def track(self, events: object) -> object:
            return events

    class Ledger:
        instance_id = "bench"  # the batch worker's claim on its rows

        async def run(self) -> None:
            await asyncio.Event().wait()

    class NoPolicy:
        def __init__(self, *args: object) -> None:
            self.ledger = Ledger()

        async def start(self) -> None:
            pass

        async def close(self) -> None:
            pass

        async def admit(self, *args: object, **kwargs: object) -> Admitted:
            return Admitted()

        async def admit_count_tokens(self, *args: object) -> dict[str, str]:
            return {}

        async def add_rate_headers(self, *args: object) -> None:
            pass

        async def count_tokens_headers(self, *args: object) -> None:
            pass

    async def anyone(db: object, headers: object) -> Principal:
        return Principal("apikey_bench", "default")

    missive_server.Policy = NoPolicy  # type: ignore[attr-defined]
    context.authenticate = anyone  # type: ignore[assignment]


# ---- the load ---------------------------------------------------------------------------------------


async def _load(
    url: str, headers: dict[str, str], concurrency: int, count: int, body: dict = BODY, warmup: int = 20
) -> tuple[float, list[float], int]:
    """`count` requests over `concurrency` connections: (seconds, latencies, failures)."""
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        remaining = count

        async def worker() -> None:
            nonlocal remaining, failures
            while remaining > 0:
                remaining -= 1
                began = time.perf_counter()
                response = await client.post("/v1/messages", json=body)
                latencies.append(time.perf_counter() - began)
                failures += response.status_code != 200

        for _ in range(max(warmup, concurrency)):  # warm up connections and caches
            await client.post("/v1/messages", json=body)
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began, latencies, failures


def measure(
    url: str,
    key: str,
    concurrency: int,
    count: int,
    body: dict = BODY,
    serial_count: int | None = None,
    warmup: int = 20,
) -> dict[str, float]:
    """requests/s of `count` requests at `concurrency`; latency p50/p99 of `serial_count` (default
    max(200, count / 5)) one at a time; each after `warmup` requests (at least `concurrency`).
    Non-streaming `body`s, kept-alive connections."""
    headers = {"x-api-key": key, "authorization": f"Bearer {key}", "anthropic-version": "2023-06-01"}
    serial_count = serial_count or max(200, count // 5)
    _, serial, failed_serial = asyncio.run(_load(url, headers, 1, serial_count, body, warmup))
    seconds, _, failed = asyncio.run(_load(url, headers, concurrency, count, body, warmup))
    serial.sort()
    return {
        "rps": count / seconds,
        "p50_ms": statistics.median(serial) * 1000,
        "p99_ms": serial[min(len(serial) - 1, int(len(serial) * 0.99))] * 1000,
        "failed": failed + failed_serial,
    }


# ---- orchestration ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start:\n{log.read_text()[-3000:]}")


def _start(command: list[str], env: dict[str, str], log: Path, url: str) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _wait(url, process, log)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def _litellm_config(upstream: str) -> str:
    return (
        "model_list:\n  - model_name: claude-haiku-4-5\n    litellm_params:\n      model: anthropic/claude-haiku-4-5\n"
        f"      api_base: {upstream}\n      api_key: sk-upstream\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--litellm", default=str(ROOT / ".cache/bench-venv/bin/litellm"))
    parser.add_argument(
        "--postgres", help="also run Missive on this PostgreSQL URL (a fresh schema, dropped after)"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for the --postgres run")
    parser.add_argument("--only", help="comma-separated targets")
    parser.add_argument("--serve", choices=["upstream", "missive", "missive-bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "upstream":
        return serve_upstream(args.port)
    if args.serve:
        return serve_missive(args.port, bare=args.serve == "missive-bare")

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="missive-policy-bench-") as tmp:
        work = Path(tmp)
        me = [sys.executable, str(Path(__file__).resolve())]
        up_port = _free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        up = _start(
            [*me, "--serve", "upstream", "--port", str(up_port)], dict(os.environ), work / "up.log", upstream
        )
        targets = ["upstream", "litellm", "missive-forward", "missive-bare", "missive"] + (
            ["missive-pg-redis"] if args.postgres else []
        )
        if args.only:
            targets = [name for name in targets if name in args.only.split(",")]
        try:
            for name in targets:
                results[name] = _run_target(name, args, me, work, upstream)
                row = results[name]
                print(
                    f"{name:<18} {row['rps']:8.0f} req/s   p50 {row['p50_ms']:6.2f} ms   p99 {row['p99_ms']:6.2f} ms"
                    f"   failed {row['failed']:.0f}",
                    flush=True,
                )
        finally:
            _stop(up)
    _report(results, args)
    failed = {name: int(row["failed"]) for name, row in results.items() if row["failed"]}
    if failed:
        sys.exit(f"requests failed (not 200), so these figures do not count: {failed}")


def _env() -> dict[str, str]:
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}


@contextlib.contextmanager
def litellm_proxy(binary: str, upstream: str, work: Path) -> Iterator[tuple[str, str]]:
    """LiteLLM's proxy (one worker, master-key auth) serving claude-haiku-4-5 from the Anthropic-compatible
    `upstream`; its config and log go in `work`. Yields (url, key)."""
    work.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{(port := _free_port())}"
    config = work / "litellm.yaml"
    config.write_text(_litellm_config(upstream))
    command = [binary, "--config", str(config), "--port", str(port), "--num_workers", "1"]
    process = _start(command, _env(), work / "litellm.log", f"{url}/health/liveliness")
    try:
        yield url, LITELLM_KEY
    finally:
        _stop(process)


@contextlib.contextmanager
def missive_forward(upstream: str, work: Path) -> Iterator[tuple[str, str]]:
    """Missive (the whole policy path, its first key) serving claude-haiku-4-5 from the Anthropic-compatible
    `upstream` through its anthropic engine; its data and log go in `work`. Yields (url, key)."""
    work.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{(port := _free_port())}"
    (work / "missive.toml").write_text(FORWARD_CONFIG.format(upstream=upstream))
    env = {**_env(), "MISSIVE_CONFIG": str(work / "missive.toml"), "MISSIVE_DATA_DIR": str(work / "data")}
    log = work / "missive.log"
    command = [sys.executable, "-m", "missive", "serve", "--port", str(port)]
    process = _start(command, env, log, f"{url}/v1/models")
    try:
        key = re.search(r"^\s+(sk-missive-\S+)$", log.read_text(), re.M).group(1)  # type: ignore[union-attr]
        yield url, key
    finally:
        _stop(process)


def _run_target(
    name: str, args: argparse.Namespace, me: list[str], work: Path, upstream: str
) -> dict[str, float]:
    if name == "upstream":
        return measure(upstream, "none", args.concurrency, args.requests)
    if name == "litellm":
        with litellm_proxy(args.litellm, upstream, work / name) as (url, key):
            return measure(url, key, args.concurrency, args.requests)
    if name == "missive-forward":
        with missive_forward(upstream, work / name) as (url, key):
            return measure(url, key, args.concurrency, args.requests)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env()
    data = work / name
    data.mkdir()
    database, limiter, prefix, schema = "", "memory", "bench:", None
    if name == "missive-pg-redis":
        schema = _pg_schema(args.postgres, create=True)
        database = f'database_url = "{args.postgres}?options=-csearch_path%3D{schema}"'
        limiter, prefix = "redis", f"missive-bench-{schema}:"
    (data / "missive.toml").write_text(
        MISSIVE_CONFIG.format(database=database, limiter=limiter, redis=args.redis, prefix=prefix)
    )
    env.update(MISSIVE_CONFIG=str(data / "missive.toml"), MISSIVE_DATA_DIR=str(data / "data"))
    serve = "missive-bare" if name == "missive-bare" else "missive"
    log = work / f"{name}.log"
    process = _start([*me, "--serve", serve, "--port", str(port)], env, log, f"{url}/v1/models")
    found = re.search(r"^\s+(sk-missive-\S+)$", log.read_text(), re.M)
    key = found.group(1) if found else "sk-missive-bare"
    try:
        return measure(url, key, args.concurrency, args.requests)
    finally:
        _stop(process)
        if name == "missive-pg-redis":
            _pg_schema(args.postgres, drop=schema)
            _redis_clear(args.redis, f"missive-bench-{schema}:")


def _pg_schema(url: str, create: bool = False, drop: str | None = None) -> str:
    import secrets

    import sqlalchemy as sa

    engine = sa.create_engine(url)
    schema = drop or "missive_bench_" + secrets.token_hex(4)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"' if create else f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()
    return schema


def _redis_clear(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def _report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(
        f"\nrequests/s at concurrency {args.concurrency} ({args.requests} requests); latency at concurrency 1"
    )
    print(
        f"{'target':<18} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8}  added against"
    )
    base_for = {
        "litellm": "upstream",
        "missive-forward": "upstream",
        "missive": "missive-bare",
        "missive-pg-redis": "missive-bare",
        "missive-bare": "upstream",
    }
    for name, row in results.items():
        base = results.get(base_for.get(name, ""))
        added = (
            f"{row['p50_ms'] - base['p50_ms']:8.2f} {row['p99_ms'] - base['p99_ms']:8.2f}  {base_for[name]}"
            if base
            else f"{'':>8} {'':>8}"
        )
        print(f"{name:<18} {row['rps']:8.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {added}")


if __name__ == "__main__":
    main()
