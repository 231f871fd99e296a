"""Missive's own CPU cost in front of a FAST fake chat-completions upstream (issue 10.7).

Starts (1) a fake llama-server-like upstream (raw asyncio, `Server: llama.cpp`, chunked SSE of N
content chunks, `--gap-ms` between chunks so that each arrives in its own read, as a real engine's
tokens do), (2) `python -m missive serve` with one `kind = "openai"` engine pointing at it, then drives
streaming /v1/messages requests through Missive at c=1 and c=8 and reads Missive's utime+stime from
/proc/<pid>/stat before and after each phase. Reports CPU-ms per request, CPU-us per relayed token,
and the time to first text delta through Missive minus the same measured directly on the upstream.

Run from the repository root:
    .venv/bin/python bench/front_cpu.py [--requests 60] [--chunks 200] [--gap-ms 1]
    add --py-spy py-spy [--spy-clients 1] [--spy-out FILE.txt|FILE.svg] to profile a phase
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import serving  # bench/serving.py: Missive in front of an upstream, as the serving and gateway benchmarks run it

TICK = os.sysconf("SC_CLK_TCK")


# ---- the fake upstream ------------------------------------------------------------------------------


def _chunk(payload: dict) -> bytes:
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def canned(chunks: int) -> list[bytes]:
    base = {"created": 1765000000, "id": "chatcmpl-4Ff2kq9sYbW0", "model": "smollm2",
            "system_fingerprint": "b6123-abcdef0", "object": "chat.completion.chunk"}
    out = [_chunk({"choices": [{"finish_reason": None, "index": 0, "delta": {"role": "assistant", "content": None}}],
                   **base})]
    words = ["Once", " upon", " a", " time", ",", " there", " was", " a", " little", " fox", ".", "\n"]
    for i in range(chunks):
        out.append(_chunk({"choices": [{"finish_reason": None, "index": 0, "delta": {"content": words[i % 12]}}],
                           **base}))
    out.append(_chunk({"choices": [{"finish_reason": "length", "index": 0, "delta": {}}], **base}))
    out.append(_chunk({"choices": [], **base, "usage": {"completion_tokens": chunks, "prompt_tokens": 24,
                                                         "total_tokens": chunks + 24},
                       "timings": {"prompt_n": 24, "prompt_ms": 10.0, "predicted_n": chunks}}))
    out.append(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
    return out


async def serve_upstream(port: int, chunks: int, gap: float) -> None:
    stream = canned(chunks)
    models = json.dumps({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                if n := int(headers.get("content-length", "0")):
                    await reader.readexactly(n)
                close = headers.get("connection", "").lower() == "close"
                if method == "GET":
                    writer.write(b"HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(models), models))
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nContent-Type: text/event-stream\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                    for piece in stream:
                        writer.write(piece)
                        await writer.drain()
                        if gap:
                            await asyncio.sleep(gap)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


# ---- the client -------------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime (fields 14 and 15)


BODY = {"model": "smollm2", "max_tokens": 4000, "stream": True, "temperature": 0,
        "messages": [{"role": "user", "content": "Write a long story about a fox."}]}


async def one(port: int, path: str, body: bytes, headers: bytes) -> tuple[float, int]:
    """A raw HTTP/1.1 streaming request on a fresh connection: (seconds to the first text, text pieces)."""
    sent = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n%s\r\n%s" % (path.encode(), len(body), headers, body))
    first, pieces = 0.0, 0
    text_marker = b'"text_delta"' if path == "/v1/messages" else b'"content":"'
    buffer = b""
    while data := await reader.read(65536):
        buffer += data
        *done, buffer = buffer.split(b"\n\n")
        for event in done:
            if text_marker in event:
                pieces += 1
                if not first:
                    first = time.perf_counter() - sent
    writer.close()
    return first, pieces


async def load(port: int, path: str, headers: bytes, clients: int, requests: int) -> tuple[list[float], int, float]:
    body = json.dumps(BODY).encode()
    ttfts: list[float] = []
    pieces = 0
    queue = list(range(requests))

    async def worker() -> None:
        nonlocal pieces
        while queue:
            queue.pop()
            ttft, n = await one(port, path, body, headers)
            ttfts.append(ttft)
            pieces += n

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return ttfts, pieces, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=1.0)
    parser.add_argument("--py-spy", default=None, help="py-spy binary: record one phase (--spy-clients)")
    parser.add_argument("--spy-clients", type=int, default=1)
    parser.add_argument("--attach", default=None, help="a command run on the phase instead of py-spy ({pid}), e.g. "
                        "'strace -c -f -o strace.txt -p {pid}'")
    parser.add_argument("--spy-out", default=".cache/bench/front_cpu.txt", help=".svg: flame graph, else collapsed stacks")
    parser.add_argument("--src", default=None, help="run Missive from this source tree (PYTHONPATH), e.g. a baseline copy")
    parser.add_argument("--serve-upstream", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        asyncio.run(serve_upstream(args.serve_upstream, args.chunks, args.gap_ms / 1000))
        return

    up_port = serving.free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(up_port), "--chunks", str(args.chunks),
                                 "--gap-ms", str(args.gap_ms)])
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [args.src, os.environ.get("PYTHONPATH")]))} if args.src else None
    try:
        with serving.missive_proxy(f"http://127.0.0.1:{up_port}", context=8192, env=env) as target:
            port, key, pid = int(target.base_url.rsplit(":", 1)[1]), target.headers["x-api-key"], target.pid
            assert pid is not None
            check = subprocess.run([sys.executable, "-c", "import missive; print(missive.__file__)"],
                                   env={**os.environ, **(env or {})}, capture_output=True, text=True)
            print("missive from", check.stdout.strip())
            headers = b"x-api-key: %s\r\nanthropic-version: 2023-06-01\r\n" % key.encode()
            asyncio.run(load(port, "/v1/messages", headers, 2, 10))  # warm-up
            asyncio.run(load(up_port, "/v1/chat/completions", b"", 1, 5))
            for clients in (1, 8):
                direct, _, _ = asyncio.run(load(up_port, "/v1/chat/completions", b"", clients, args.requests))
                spy = None
                if args.attach and clients == args.spy_clients:
                    spy = subprocess.Popen(args.attach.format(pid=pid).split())
                    time.sleep(1)
                if args.py_spy and clients == args.spy_clients:
                    form = "flamegraph" if args.spy_out.endswith(".svg") else "raw"
                    spy = subprocess.Popen([args.py_spy, "record", "--pid", str(pid), "-o", args.spy_out,
                                            "--rate", "250", "--nonblocking", "--format", form],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1)
                before = cpu_ticks(pid)
                ttfts, pieces, wall = asyncio.run(load(port, "/v1/messages", headers, clients, args.requests))
                after = cpu_ticks(pid)
                user, system = (after[0] - before[0]) / TICK, (after[1] - before[1]) / TICK
                used = user + system
                if spy:
                    spy.send_signal(2)
                    spy.wait(30)
                expected = args.requests * args.chunks
                print(f"c={clients}: {args.requests} requests, {pieces} text deltas (expected {expected}), "
                      f"wall {wall:.2f} s")
                print(f"  missive CPU {used * 1000:.0f} ms: {used * 1000 / args.requests:.2f} CPU-ms/request, "
                      f"{used * 1e6 / max(pieces, 1):.1f} CPU-us/token (user {user * 1000:.0f} ms, system {system * 1000:.0f} ms)")
                print(f"  TTFT p50 direct {1000 * statistics.median(direct):.2f} ms, via missive "
                      f"{1000 * statistics.median(ttfts):.2f} ms, added "
                      f"{1000 * (statistics.median(ttfts) - statistics.median(direct)):+.2f} ms", flush=True)
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
