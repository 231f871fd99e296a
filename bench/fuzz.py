"""Fuzzing, the long run: the cases of tests/fuzzing.py by the ten thousand, against a real server.

It starts a Missive of its own (the test suite's configuration, a fresh data directory, its log kept
for tracebacks), or fuzzes the server at --url with the keys given. Cases are drawn by hypothesis
from every route (the Messages API's routes more often) and sent by a few workers at once. At the end
it prints the requests per route and status, and each failure: a 5xx (but a 529 with retry-after),
a malformed error or stream, a missing request-id, or no answer within the timeout, with the request
and the server's log lines for it (the first few of each kind in full, then a count).

Run:  .venv/bin/python bench/fuzz.py [--requests 10000] [--workers 2] [--seed 1] [--large]
      .venv/bin/python bench/fuzz.py --url http://127.0.0.1:8080 --api-key sk-... --admin-key sk-...-admin-...
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import CONFIG, launch, stop  # noqa: E402
from fuzzing import Case, Fuzzer, Outcome, Targets, any_case, prepare  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

SHOWN_PER_KIND = 3  # failures of one kind printed in full; the rest are counted


@contextlib.contextmanager
def own_server(save_log: Path | None = None) -> Iterator[tuple[str, str, Path]]:
    """A fresh Missive with the test suite's configuration: (base URL, admin key, log path)."""
    with tempfile.TemporaryDirectory(prefix="missive-fuzz-") as root:
        process, server = launch(Path(root), CONFIG)
        try:
            made = server.cli("keys", "create", "--admin", "--name", "fuzz admin")
            if made.returncode != 0:
                raise RuntimeError(made.stderr)
            yield server.base_url, made.stdout.strip().splitlines()[-1], server.log_path
            if process.poll() is not None:
                print(f"the server exited with code {process.returncode}", flush=True)
        finally:
            stop(process)
            if save_log:
                shutil.copyfile(server.log_path, save_log)


def kind_of(outcome: Outcome) -> str:
    """A failure's kind, to group alike ones: route, status, first problem, the exception in the log."""
    exceptions = re.findall(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit)\b[^\n]{0,80})", outcome.log, re.M)
    problem = re.sub(r"\d+(\.\d+)? s\b", "N s", outcome.problems[0])[:90]
    return f"{outcome.case.route} | {outcome.status} | {problem} | {exceptions[-1] if exceptions else '-'}"


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.failures: dict[str, list[Outcome]] = collections.defaultdict(list)
        self.sent = 0
        self.seconds: list[float] = []
        self.errors: collections.Counter[str] = collections.Counter()  # route and message, for coverage

    def add(self, outcome: Outcome) -> None:
        status = "unsent" if outcome.unsent else str(outcome.status) if outcome.status else "no answer"
        with self.lock:
            self.sent += 1
            self.counts[outcome.case.route][status] += 1
            self.seconds.append(outcome.seconds)
            if outcome.status and outcome.status >= 400:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    message = json.loads(outcome.detail)["error"]["message"]
                    self.errors[f"{outcome.case.route}: {re.sub(r'[0-9]+', 'N', message)[:70]}"] += 1
            if outcome.problems:
                kind = kind_of(outcome)
                self.failures[kind].append(outcome)
                if len(self.failures[kind]) <= SHOWN_PER_KIND:
                    print(f"\nFAILURE ({kind})\n{outcome.report()}\n", flush=True)

    def table(self) -> str:
        statuses = sorted({s for c in self.counts.values() for s in c}, key=lambda s: (not s.isdigit(), s))
        width = max(len(route) for route in self.counts) + 2
        lines = [f"{'route':<{width}}{'total':>7}" + "".join(f"{s:>10}" for s in statuses)]
        for route in sorted(self.counts):
            row = self.counts[route]
            lines.append(f"{route:<{width}}{sum(row.values()):>7}" + "".join(f"{row.get(s, 0):>10}" for s in statuses))
        total = collections.Counter[str]()
        for row in self.counts.values():
            total.update(row)
        lines.append(f"{'all':<{width}}{sum(total.values()):>7}" + "".join(f"{total.get(s, 0):>10}" for s in statuses))
        return "\n".join(lines)


def fuzz(base_url: str, targets: Targets, log_path: Path | None, args: argparse.Namespace) -> Tally:
    tally = Tally()
    cases: queue.Queue[Case | None] = queue.Queue(maxsize=args.workers * 4)
    started = time.monotonic()

    def worker() -> None:
        sender = Fuzzer(base_url, log_path, timeout=args.timeout)
        try:
            while (case := cases.get()) is not None:
                tally.add(sender.send(case))
                if tally.sent % 1000 == 0:
                    print(f"  {tally.sent} requests, {time.monotonic() - started:.0f} s", flush=True)
        finally:
            sender.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.workers)]
    for thread in threads:
        thread.start()

    @seed(args.seed)
    @settings(
        max_examples=args.requests,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=any_case(targets, args.large))
    def generate(case: Case) -> None:
        cases.put(case)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate()
    for _ in threads:
        cases.put(None)
    for thread in threads:
        thread.join()
    return tally


def summary(tally: Tally, log_path: Path | None, elapsed: float) -> str:
    lines = [
        f"\n{tally.sent} requests in {elapsed:.0f} s ({tally.sent / max(elapsed, 1e-9):.1f}/s); "
        f"slowest {max(tally.seconds, default=0):.1f} s",
        "",
        tally.table(),
        "",
    ]
    if tally.errors:
        lines.append("most frequent refusals:")
        lines += [f"  {count:>5}  {message}" for message, count in tally.errors.most_common(25)]
        lines.append("")
    failed = sum(len(found) for found in tally.failures.values())
    lines.append(f"failures: {failed}, of {len(tally.failures)} kinds" + (":" if failed else ""))
    for kind, found in sorted(tally.failures.items(), key=lambda item: -len(item[1])):
        lines.append(f"  {len(found):>5}  {kind}")
    if log_path:
        log = log_path.read_text(errors="replace")
        lines.append(
            f"server log: {log.count('Traceback')} tracebacks, "
            f"{log.count('engine process exited')} engine process restarts, {len(log) // 1024} KiB"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="requests in flight at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without an answer that count as a hang")
    parser.add_argument("--large", action="store_true", help="also send bodies past the 32 MiB limit")
    parser.add_argument("--url", help="fuzz this server instead of starting one")
    parser.add_argument("--api-key", help="with --url: an API key (the fuzzer makes its own from --admin-key)")
    parser.add_argument("--admin-key", help="with --url: an admin key")
    parser.add_argument("--log", type=Path, help="with --url: the server's log file, for tracebacks")
    parser.add_argument("--json", type=Path, help="write the counts and every failure here")
    parser.add_argument("--save-log", type=Path, help="copy the server's whole log here at the end")
    args = parser.parse_args()

    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.url:
            if not args.admin_key:
                parser.error("--url needs --admin-key")
            base_url, admin_key, log_path = args.url.rstrip("/"), args.admin_key, args.log
        else:
            print("starting a Missive server ...", flush=True)
            base_url, admin_key, log_path = stack.enter_context(own_server(args.save_log))
        targets = prepare(base_url, admin_key)
        print(f"fuzzing {base_url} with {args.requests} requests, {args.workers} at a time", flush=True)
        tally = fuzz(base_url, targets, log_path, args)
        print(summary(tally, log_path, time.monotonic() - started), flush=True)
    if args.json:
        failures = [
            {"kind": kind, "status": o.status, "problems": o.problems, "request": o.case.show(), "log": o.log}
            for kind, found in tally.failures.items()
            for o in found
        ]
        args.json.write_text(json.dumps({"counts": tally.counts, "failures": failures}, indent=1))
    sys.exit(1 if tally.failures else 0)


if __name__ == "__main__":
    main()
