"""Where the embedded engine's time goes under load (issue 13.3): py-spy samples the engine process while
`serving.load` streams at --clients, and each sample of the step loop is put in one bucket:

  llama_decode        the forward pass (llama.cpp, through ctypes)
  sampling, grammar   the sampler chain, logits, the grammar's accept (sampling.py, grammar.py)
  text and parsers    detokenizing, stop sequences, tool-call and thinking parsers (`_output` and below)
  handing over        events to the API process: emit, one pipe write per step (`_flush`)
  scheduler           the rest of the step: planning, batches, prefix reuse, bookkeeping
  engine I/O thread   the engine process's other threads: reading requests, writing events to the pipe

Idle time (the loop waiting for work) is not sampled. The buckets are shares of the busy samples;
llama_decode's is the share of the Python line that calls it (`--native` makes py-spy unwind native
frames too).

Run:  .venv/bin/python bench/engine_profile.py --py-spy PATH [--clients 8] [--seconds 20] [--src DIR]
      (py-spy: pip install py-spy, in any environment; --src runs another tree, e.g. an older commit)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import serving

BUCKETS = [  # (bucket, function names of the step loop's frames that put a sample in it), first match wins
    ("llama_decode", {"_decode"}),
    ("sampling, grammar", {"sample", "accept"}),  # Sampler's: the chain, the grammar's checks
    ("text and parsers", {"_output", "_finish", "output_piece", "is_end_of_generation"}),
    ("handing over", {"emit", "_flush"}),
]
LOOP = "_loop"  # the scheduler thread's outermost frame of ours


def bucket(stack: list[str]) -> str:
    """A sample's bucket; `stack` is outermost first, each frame `Class.function (file:line)`."""
    names = [frame.split(" (", 1)[0].rsplit(".", 1)[-1] for frame in stack]
    if LOOP not in names:
        return "engine I/O thread"
    for name in names[names.index(LOOP) :]:
        for label, functions in BUCKETS:
            if name in functions:
                return label
    return "scheduler"


def engine_pid(server_pid: int, timeout: float = 60) -> int:
    """The engine process: the serving process's child that runs the step loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
        for child in children:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():  # not the resource tracker
                return int(child)
        time.sleep(0.5)
    sys.exit("no engine process found under the server")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--py-spy", required=True, help="the py-spy binary")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=20, help="how long py-spy samples, under load")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--native", action="store_true", help="unwind native frames too")
    parser.add_argument("--src", default=None, help="run Missive from this source tree (PYTHONPATH)")
    parser.add_argument("--out", default=str(serving.OUT / "engine_profile.txt"), help="collapsed stacks")
    args = parser.parse_args()
    if args.src:
        os.environ["PYTHONPATH"] = str(Path(args.src).resolve())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    with serving.missive() as target:
        assert target.pid is not None
        pid = engine_pid(target.pid)
        stop = threading.Event()

        def drive() -> None:
            tag = 0
            while not stop.is_set():
                tag += 1
                asyncio.run(serving.load(target, args.clients, 1, 256, f"profile{tag}."))

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        time.sleep(5)  # the load is under way
        command = [args.py_spy, "record", "-p", str(pid), "-d", str(args.seconds), "-r", str(args.rate),
                   "-f", "raw", "-o", args.out, "--nonblocking", *(["--native"] if args.native else [])]
        subprocess.run(command, check=True, capture_output=True)
        stop.set()
        driver.join(timeout=120)

    counts: collections.Counter[str] = collections.Counter()
    for line in Path(args.out).read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        counts[bucket(stack.split(";"))] += int(samples)
    total = sum(counts.values())
    print(f"engine process under c={args.clients}: {total} busy samples in {args.seconds} s at {args.rate}/s")
    for label in [*(name for name, _ in BUCKETS), "scheduler", "engine I/O thread"]:
        print(f"  {label:<20} {100 * counts[label] / max(total, 1):5.1f} %")
    print(f"collapsed stacks in {args.out}")


if __name__ == "__main__":
    main()
