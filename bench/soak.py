"""Soak: mixed traffic against one server for a while, and what the server holds at the start and the end.

Client threads (--clients) send, for --minutes (default 30), a mix of:
  stream        a short streamed answer, read to message_stop
  cancel        a stream closed after its first few text deltas (the generation is cancelled)
  message       a non-streamed answer
  tool          a forced tool call (tool_choice any), then the turn after its tool_result
  cache         a long system prompt marked cache_control, then a question (cache reads are counted)
  count_tokens  a prompt counted, with tools
  admin         usage and cost reports, key and workspace lists, a key made and archived
  models        the model list
After a warm-up, and again at the end (when the traffic has stopped and settled for a few seconds), it
reads /proc of the server process and of its children (the engine process): resident memory, open
file descriptors and threads. It prints those, and requests, failures and latency per kind. A failure
is an HTTP error, an error event inside a stream, a stream that ends without message_stop, or a
transport error or timeout.

It starts a Missive of its own (one model, a fresh data directory), or soaks --url (with --api-key,
--admin-key, and --pid for the /proc figures).

Run:  .venv/bin/python bench/soak.py [--minutes 30] [--clients 4]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import launch, stop  # noqa: E402

CONFIG = """
default_model = "smollm2-135m-instruct"

[local]
parallel = 4

[[models]]
id = "smollm2-135m-instruct"
context_window = 4096
min_cache_tokens = 64
"""
MODEL = "smollm2-135m-instruct"
SYSTEM = (
    "You are the reference librarian of a large public library. Answer questions about books, authors, "
    "genres and reading habits clearly and kindly. "
) * 40
TOPICS = ["a lighthouse", "a river", "the moon", "a clockmaker", "a desert", "a violin", "a glacier", "a market"]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


# --- /proc ---------------------------------------------------------------------------------------


PROCESS_NAMES = [
    (" serve ", "server"),
    ("resource_tracker", "multiprocessing resource tracker"),
    ("multiprocessing-fork", "engine process"),
]


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                found += [int(child) for child in listed.read().split()]
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo += children(current)
    return tree


def figures(pid: int) -> dict[str, object]:
    """Resident memory (MiB), open file descriptors and threads of one process, and what it is."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    what = next((name for part, name in PROCESS_NAMES if part in cmdline), cmdline.strip()[-40:])
    return {
        "pid": pid,
        "what": what,
        "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
    }


def snapshot(pid: int | None) -> list[dict[str, object]]:
    if pid is None:
        return []
    found = []
    for member in process_tree(pid):
        with contextlib.suppress(OSError, KeyError):
            found.append(figures(member))
    return found


# --- traffic ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: dict[str, collections.Counter[str]] = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    seconds: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    cache_reads: int = 0
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, seconds: float, failure: str | None, detail: str = "") -> None:
        with self.lock:
            self.requests[kind] += 1
            self.seconds[kind].append(seconds)
            if failure:
                self.failures[kind][failure] += 1
                self.examples.setdefault(f"{kind}: {failure}", detail[:500])


class Failure(Exception):
    def __init__(self, what: str, detail: str = "") -> None:
        super().__init__(what)
        self.what, self.detail = what, detail


def _checked(response: httpx.Response) -> dict:
    if response.status_code != 200:
        raise Failure(f"HTTP {response.status_code}", response.text)
    return response.json()


def _events(response: httpx.Response) -> Iterator[dict]:
    if response.status_code != 200:
        response.read()
        raise Failure(f"HTTP {response.status_code}", response.text)
    for line in response.iter_lines():
        if line.startswith("data: "):
            event = json.loads(line[6:])
            if event["type"] == "error":
                raise Failure(f"stream error {event['error']['type']}", line)
            yield event


class Traffic:
    def __init__(self, base_url: str, api_key: str, admin_key: str, tally: Tally) -> None:
        self.api = httpx.Client(
            base_url=base_url, headers={"x-api-key": api_key, "anthropic-version": "2023-06-01"}, timeout=120
        )
        self.admin = httpx.Client(
            base_url=base_url, headers={"x-api-key": admin_key, "anthropic-version": "2023-06-01"}, timeout=120
        )
        self.tally = tally
        self.random = random.Random()
        self.kinds: dict[str, tuple[int, Callable[[], None]]] = {
            "stream": (4, self.stream),
            "cancel": (3, self.cancel),
            "message": (2, self.message),
            "tool": (2, self.tool),
            "cache": (2, self.cache),
            "count_tokens": (2, self.count_tokens),
            "admin": (2, self.admin_call),
            "models": (1, self.models),
        }

    def close(self) -> None:
        self.api.close()
        self.admin.close()

    def one(self) -> None:
        names = list(self.kinds)
        kind = self.random.choices(names, weights=[self.kinds[name][0] for name in names])[0]
        started = time.monotonic()
        failure, detail = None, ""
        try:
            self.kinds[kind][1]()
        except Failure as exc:
            failure, detail = exc.what, exc.detail
        except httpx.TimeoutException as exc:
            failure = f"timeout ({type(exc).__name__})"
        except httpx.HTTPError as exc:
            failure, detail = f"transport {type(exc).__name__}", str(exc)
        self.tally.add(kind, time.monotonic() - started, failure, detail)

    def _ask(self, max_tokens: int, **extra: object) -> dict:
        topic = self.random.choice(TOPICS)
        return {
            "model": MODEL,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": f"Write two sentences about {topic} ({self.random.random():.6f})."}],
            **extra,
        }

    def stream(self) -> None:
        with self.api.stream("POST", "/v1/messages", json=self._ask(32, stream=True)) as response:
            names = [event["type"] for event in _events(response)]
        if not names or names[-1] != "message_stop":
            raise Failure("stream ended without message_stop", " ".join(names[-5:]))

    def cancel(self) -> None:
        wanted = self.random.randint(1, 5)
        with self.api.stream("POST", "/v1/messages", json=self._ask(400, stream=True)) as response:
            deltas = 0
            for event in _events(response):
                deltas += event["type"] == "content_block_delta"
                if deltas >= wanted or event["type"] == "message_stop":
                    break  # leaving the block closes the connection mid-stream

    def message(self) -> None:
        reply = _checked(self.api.post("/v1/messages", json=self._ask(16)))
        if reply.get("type") != "message":
            raise Failure("not a message", json.dumps(reply))

    def tool(self) -> None:
        city = self.random.choice(["Paris", "Lima", "Oslo", "Accra"])
        ask = {
            "model": MODEL,
            "max_tokens": 64,
            "tools": [WEATHER],
            "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": f"What is the weather in {city}?"}],
        }
        reply = _checked(self.api.post("/v1/messages", json=ask))
        uses = [block for block in reply["content"] if block["type"] == "tool_use"]
        if not uses:
            return  # cut short by max_tokens: a legitimate end
        results = [{"type": "tool_result", "tool_use_id": use["id"], "content": "Sunny, 21 C"} for use in uses]
        ask["messages"] += [{"role": "assistant", "content": reply["content"]}, {"role": "user", "content": results}]
        ask["tool_choice"] = {"type": "auto"}
        ask["max_tokens"] = 16
        _checked(self.api.post("/v1/messages", json=ask))

    def cache(self) -> None:
        system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}]
        reply = _checked(self.api.post("/v1/messages", json=self._ask(8, system=system)))
        if reply["usage"].get("cache_read_input_tokens"):
            with self.tally.lock:
                self.tally.cache_reads += 1

    def count_tokens(self) -> None:
        ask = self._ask(1, tools=[WEATHER], system=SYSTEM[:500])
        del ask["max_tokens"]
        if not _checked(self.api.post("/v1/messages/count_tokens", json=ask)).get("input_tokens"):
            raise Failure("no input_tokens")

    def admin_call(self) -> None:
        start = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        call = self.random.choice(["usage", "cost", "keys", "workspaces", "key lifecycle"])
        o = "/v1/organizations"
        if call == "usage":
            _checked(self.admin.get(f"{o}/usage_report/messages", params={"starting_at": start, "bucket_width": "1h"}))
        elif call == "cost":
            _checked(self.admin.get(f"{o}/cost_report", params={"starting_at": start}))
        elif call == "keys":
            _checked(self.admin.get(f"{o}/api_keys", params={"limit": 100}))
        elif call == "workspaces":
            _checked(self.admin.get(f"{o}/workspaces"))
        else:
            made = _checked(self.admin.post(f"{o}/api_keys", json={"name": "soak"}))
            _checked(self.admin.post(f"{o}/api_keys/{made['id']}", json={"status": "archived"}))

    def models(self) -> None:
        _checked(self.api.get("/v1/models"))


# --- the run ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def own_server(save_log: Path) -> Iterator[tuple[str, str, str, int]]:
    with tempfile.TemporaryDirectory(prefix="missive-soak-") as root:
        process, server = launch(Path(root), CONFIG)
        try:
            made = server.cli("keys", "create", "--admin", "--name", "soak admin")
            if made.returncode != 0:
                raise RuntimeError(made.stderr)
            yield server.base_url, server.api_key, made.stdout.strip().splitlines()[-1], process.pid
            log = server.log()
            save_log.parent.mkdir(parents=True, exist_ok=True)
            save_log.write_text(log)
            print(
                f"server log: {log.count('Traceback')} tracebacks, {log.count(' ERROR ')} ERROR lines, "
                f"{log.count('engine process exited')} engine process restarts, {len(log) // 1024} KiB, "
                f"kept in {save_log}"
            )
        finally:
            stop(process)


def run(clients: int, seconds: float, traffic_for: Callable[[], Traffic], tally: Tally) -> None:
    deadline = time.monotonic() + seconds

    def client() -> None:
        traffic = traffic_for()
        try:
            while time.monotonic() < deadline:
                traffic.one()
        finally:
            traffic.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def show(label: str, processes: list[dict[str, object]]) -> None:
    print(f"{label}:")
    for p in processes:
        print(f"  pid {p['pid']:>7}  rss {p['rss_mib']:8.1f} MiB  fds {p['fds']:>4}  threads {p['threads']:>3}  {p['what']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of traffic before the first figures")
    parser.add_argument("--url", help="soak this server instead of starting one")
    parser.add_argument("--api-key")
    parser.add_argument("--admin-key")
    parser.add_argument("--save-log", type=Path, default=Path(__file__).resolve().parent.parent / ".cache" / "soak" / "server.log",
                        help="where the server's whole log is kept (its own server only)")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, for the /proc figures")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.url:
            if not (args.api_key and args.admin_key):
                parser.error("--url needs --api-key and --admin-key")
            base_url, api_key, admin_key, pid = args.url.rstrip("/"), args.api_key, args.admin_key, args.pid
        else:
            print("starting a Missive server ...", flush=True)
            base_url, api_key, admin_key, pid = stack.enter_context(own_server(args.save_log))
        print(f"soaking {base_url} for {args.minutes:g} minutes with {args.clients} clients", flush=True)

        def traffic_for() -> Traffic:
            return Traffic(base_url, api_key, admin_key, tally)

        warm = Tally()
        tally = warm
        run(args.clients, args.warmup, traffic_for, warm)
        time.sleep(3)
        first = snapshot(pid)
        show("start (after the warm-up)", first)

        tally = Tally()
        started = time.monotonic()
        progress = threading.Event()

        def report() -> None:
            while not progress.wait(60):
                done = sum(tally.requests.values())
                failed = sum(sum(c.values()) for c in tally.failures.values())
                rss = " ".join(f"{p['rss_mib']:.0f}" for p in snapshot(pid))
                print(f"  {time.monotonic() - started:6.0f} s  {done} requests  {failed} failed  rss MiB {rss}", flush=True)

        reporter = threading.Thread(target=report, daemon=True)
        reporter.start()
        run(args.clients, args.minutes * 60, traffic_for, tally)
        progress.set()
        elapsed = time.monotonic() - started
        time.sleep(5)  # let cancelled generations and the ledger settle
        last = snapshot(pid)
        show("end", last)

        print(f"\n{sum(tally.requests.values())} requests in {elapsed:.0f} s; cache reads on {tally.cache_reads} "
              f"of {tally.requests['cache']} cache requests")  # fmt: skip
        print(f"{'kind':<14}{'requests':>9}{'failed':>8}{'p50 s':>8}{'p95 s':>8}")
        for kind in sorted(tally.requests):
            times = sorted(tally.seconds[kind])
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            failed = sum(tally.failures[kind].values())
            print(f"{kind:<14}{tally.requests[kind]:>9}{failed:>8}{statistics.median(times):>8.2f}{p95:>8.2f}")
        for kind, found in sorted(tally.failures.items()):
            for what, count in found.most_common():
                print(f"  {kind}: {what} x{count}: {tally.examples.get(f'{kind}: {what}', '')[:300]}")
        if first and last:
            print("\nchange, start -> end:")
            for a, b in zip(first, last, strict=False):
                print(f"  {b['what'][-40:]:<40}  rss {a['rss_mib']:.1f} -> {b['rss_mib']:.1f} MiB  "
                      f"fds {a['fds']} -> {b['fds']}  threads {a['threads']} -> {b['threads']}")  # fmt: skip


if __name__ == "__main__":
    main()
