"""Billing after a crash: what the ledger holds for streams cut by kill -9, against what clients received.

It starts a Missive of its own (one model, a fresh SQLite data directory), opens --streams streams,
each a generation that runs far longer than the test, started --stagger seconds apart so that they
are cut at different lengths. When the last one has received --deltas text deltas, the server is
killed with SIGKILL. The ledger's rows are then read from the database as the crash left them: they
are what recovery settles as `interrupted` (tests/test_platform_e2e.py shows that it settles them
unchanged). For each stream it prints the text deltas received (one token each: the embedded engine
sends one delta per token), the output tokens in its row, and the gap. The gap is bounded by the
ledger's token checkpoints: at most `checkpoint_tokens` (16) plus what is generated during one
`checkpoint_spacing` (0.25 s) plus the write, wherever the crash falls.

Run:  .venv/bin/python bench/crash_billing.py [--streams 4] [--deltas 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import COUNTING, launch, stop  # noqa: E402
from soak import CONFIG  # noqa: E402  (the soak's server: one model, 4 sequences)


def one_round(streams: int, deltas: int, stagger: float) -> list[tuple[int, int]]:
    """(deltas received, output tokens in the ledger) for each stream of one crash."""
    with tempfile.TemporaryDirectory() as root:
        process, server = launch(Path(root), CONFIG, "crash.log")
        received = [0] * streams
        ids: list[str | None] = [None] * streams
        cut = threading.Event()

        def read(index: int) -> None:
            body = {"model": "smollm2-135m-instruct", "max_tokens": 3000, "temperature": 0, "stream": True,
                    "messages": COUNTING}
            headers = {"x-api-key": server.api_key, "anthropic-version": "2023-06-01"}
            try:
                with httpx.stream("POST", server.base_url + "/v1/messages", json=body, headers=headers,
                                  timeout=60) as response:
                    ids[index] = response.headers.get("request-id")  # the ledger row's id
                    for line in response.iter_lines():
                        received[index] += line.startswith("data: ") and "text_delta" in line
                        if cut.is_set():
                            break
            except httpx.HTTPError:
                pass  # the server died under it

        threads = []
        try:
            for index in range(streams):
                threads.append(threading.Thread(target=read, args=(index,)))
                threads[-1].start()
                time.sleep(stagger)
            deadline = time.monotonic() + 120
            while received[-1] < deltas and time.monotonic() < deadline:
                time.sleep(0.005)
            stop(process, hard=True)
            cut.set()
            for thread in threads:
                thread.join(30)
        finally:
            stop(process, hard=True)
        with sqlite3.connect(Path(root) / "data" / "missive.db") as db:
            rows = dict(db.execute("SELECT id, output_tokens FROM usage_records").fetchall())
        return [(received[index], rows.get(ids[index] or "", -1)) for index in range(streams)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--deltas", type=int, default=40, help="the last stream's deltas at the kill")
    parser.add_argument("--stagger", type=float, default=0.5, help="seconds between the streams' starts")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    gaps: list[int] = []
    print(f"{'round':>5} {'stream':>6} {'received':>8} {'ledger':>6} {'gap':>4}")
    for round_ in range(1, args.rounds + 1):
        for index, (received, saved) in enumerate(one_round(args.streams, args.deltas, args.stagger)):
            gaps.append(received - saved)
            print(f"{round_:>5} {index:>6} {received:>8} {saved:>6} {received - saved:>4}")
    print(f"gap (deltas received - output tokens billed): median {statistics.median(gaps)}, max {max(gaps)}, "
          f"min {min(gaps)} over {len(gaps)} streams")


if __name__ == "__main__":
    main()
