"""Gateway benchmark: Missive in front of an engine people already run, against that engine directly and
against the LiteLLM proxy in front of it. One llama.cpp llama-server (scripts/llama_server, the default
model, serving.py's threads and 8 parallel slots) is the engine throughout.

  front    Missive's OpenAI-compatible engine (`kind = "openai"`) in front of llama-server, against
           llama-server's own /v1/chat/completions, at 1 and 8 concurrent streams: aggregate output
           tokens/s (target: at least 0.97 of direct) and time to first token p50 (target: at most 3 ms
           added). Direct is driven over /v1/chat/completions because that is what the engine sends:
           the same request (serving.chat_body) reaches the same server both ways, so what differs is
           Missive's cost alone (auth, limits, ledger, translation, the second hop). llama-server's
           /v1/messages would add llama-server's own Anthropic conversion to the direct side only.
  forward  Missive's Anthropic-compatible engine (`kind = "anthropic"`) forwarding /v1/messages, against
           LiteLLM's proxy forwarding to the same upstream, each also against that upstream directly:
           requests/s at --concurrency, latency p50/p99 one request at a time, and what each proxy adds
           to them. Two upstreams: llama-server's own /v1/messages (max_tokens 4, temperature 0: a real
           engine, cheap and deterministic), and policy_bench.py's instant upstream (one canned reply:
           only the proxies' cost remains). Requests are not streamed (the figures are per request).

Every request of both paths is the same (serving.story: same prompts, same max_tokens, temperature 0,
streamed in front; policy_bench.measure's bodies in forward); the front's prompts differ between the
two paths only in one letter, so that neither reads the other's prompt from llama-server's slot cache.
All servers stay up through the run and take turns round by round (A B, then B A): the machine's speed
drifts by 20% and more over minutes. Ratios and added times are taken within each round and the median
of the rounds is reported, with each round's values printed as they come and kept in
.cache/bench/gateway.json.

Run:  .venv/bin/python bench/gateway.py            (3 rounds, about 15 minutes on 2 quiet cores)
      .venv/bin/python bench/gateway.py --quick    (one short round: a smoke test, not figures)
LiteLLM runs from .cache/bench-venv, as for policy_bench.py (--litellm names another binary).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import policy_bench  # noqa: E402  (LiteLLM and Missive-forward starters, the request/latency load)
import serving  # noqa: E402  (llama-server and Missive-proxy starters, the streaming load)

OUT = serving.OUT
FRONT_CLIENTS = (1, 8)
FORWARD_UPSTREAMS = ("llama-server", "instant")
LLAMA_BODY = {
    "model": "claude-haiku-4-5",
    "max_tokens": 4,
    "temperature": 0,
    "messages": [{"role": "user", "content": "Say hello."}],
}
TARGETS = {"ttft_added_ms": 3.0, "tokens_ratio": 0.97}


class Rounds:
    """Each figure's value per round, by path; printed as it comes."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}

    def record(self, section: str, path: str, rows: dict[str, float]) -> None:
        for key, value in rows.items():
            self.values.setdefault(f"{section} | {key}", {}).setdefault(path, []).append(value)
            print(f"  {section:<24} {path:<10} {key:<36} {value:10.2f}", flush=True)

    def median(self, section: str, key: str, path: str) -> float:
        values = self.values.get(f"{section} | {key}", {}).get(path, [])
        return statistics.median(values) if values else float("nan")

    def paired(self, section: str, key: str, a: str, b: str, how: Callable[[float, float], float]) -> float:
        """The median over rounds of how(a's value, b's value) in the same round."""
        rows = self.values.get(f"{section} | {key}", {})
        pairs = [how(x, y) for x, y in zip(rows.get(a, []), rows.get(b, []))]
        return statistics.median(pairs) if pairs else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def added(a: float, b: float) -> float:
    return a - b


# ---- front: Missive's OpenAI-compatible engine against llama-server directly ---------------------------


def front_round(
    target: serving.Target, side: str, clients: int, args: argparse.Namespace, round_: int
) -> dict[str, float]:
    per_client = args.single if clients == 1 else args.per_client
    # the tag differs in one letter between the paths (`side`): same length, no shared slot cache
    results, wall = asyncio.run(
        serving.load(target, clients, per_client, args.max_tokens, f"{clients}{side}{round_}.")
    )
    ok = [r for r in results if r.status == 200]
    return {
        "aggregate output tokens/s": sum(r.output_tokens for r in ok) / wall,
        "time to first token p50 (ms)": 1000 * serving.pct([r.ttft for r in ok], 0.5),
        "time to first token p95 (ms)": 1000 * serving.pct([r.ttft for r in ok], 0.95),
        "output tokens (median)": statistics.median(r.output_tokens for r in ok) if ok else 0,
        "failed": len(results) - len(ok),
    }


def front(llama: serving.Target, args: argparse.Namespace, rounds: Rounds) -> None:
    direct = serving.Target("direct", llama.base_url, {}, False, chat_completions=True)
    with serving.missive_proxy(llama.base_url) as proxy:
        paths = {"direct": (direct, "a"), "missive": (proxy, "b")}
        for clients in FRONT_CLIENTS:
            for round_ in range(args.rounds):
                for name in paths if round_ % 2 == 0 else list(paths)[::-1]:
                    time.sleep(1)  # let the other path's requests finish in the engine
                    target, side = paths[name]
                    rounds.record(
                        f"front c={clients}", name, front_round(target, side, clients, args, round_)
                    )


# ---- forward: Missive's Anthropic-compatible engine against LiteLLM ------------------------------------


@contextlib.contextmanager
def instant_upstream(work: Path) -> Iterator[str]:
    """policy_bench.py's instant Anthropic upstream (the same reply to every request), in its own process."""
    url = f"http://127.0.0.1:{(port := policy_bench._free_port())}"
    command = [sys.executable, policy_bench.__file__, "--serve", "upstream", "--port", str(port)]
    process = policy_bench._start(command, policy_bench._env(), work / "instant.log", url)
    try:
        yield url
    finally:
        policy_bench._stop(process)


def forward(upstream_name: str, upstream: str, args: argparse.Namespace, rounds: Rounds, work: Path) -> None:
    body = LLAMA_BODY if upstream_name == "llama-server" else policy_bench.BODY
    section = f"forward to {upstream_name}"
    with contextlib.ExitStack() as stack:
        paths = {
            "direct": (upstream, "none"),
            "litellm": stack.enter_context(
                policy_bench.litellm_proxy(args.litellm, upstream, work / f"litellm-{upstream_name}")
            ),
            "missive": stack.enter_context(
                policy_bench.missive_forward(upstream, work / f"missive-{upstream_name}")
            ),
        }
        for round_ in range(args.rounds):
            for name in paths if round_ % 2 == 0 else list(paths)[::-1]:
                url, key = paths[name]
                row = policy_bench.measure(
                    url, key, args.concurrency, args.requests, body, args.serial, args.warmup
                )
                rounds.record(
                    section,
                    name,
                    {
                        f"requests/s (concurrency {args.concurrency})": row["rps"],
                        "latency p50 (ms)": row["p50_ms"],
                        "latency p99 (ms)": row["p99_ms"],
                        "failed": row["failed"],
                    },
                )


# ---- the report --------------------------------------------------------------------------------------


def report(rounds: Rounds, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    print(f"\nmedians of {args.rounds} round(s); ratios and added times are taken within each round")
    summary: dict[str, dict[str, float]] = {}
    for clients in FRONT_CLIENTS:
        section = f"front c={clients}"
        tokens, ttft = "aggregate output tokens/s", "time to first token p50 (ms)"
        tokens_ratio = rounds.paired(section, tokens, "missive", "direct", ratio)
        ttft_added = rounds.paired(section, ttft, "missive", "direct", added)
        summary[section] = {"tokens_ratio": tokens_ratio, "ttft_added_ms": ttft_added}
        print(
            f"\n{section}: Missive (openai engine) in front of llama-server, against its /v1/chat/completions"
        )
        print(f"{'figure':<36} {'direct':>10} {'missive':>10} {'missive/direct':>16}")
        for key in (tokens, ttft, "time to first token p95 (ms)", "output tokens (median)"):
            a, b = rounds.median(section, key, "direct"), rounds.median(section, key, "missive")
            paired = rounds.paired(section, key, "missive", "direct", ratio)
            print(f"{key:<36} {a:>10.1f} {b:>10.1f} {paired:>16.3f}")
        ok_tokens = "ok" if tokens_ratio >= TARGETS["tokens_ratio"] else "MISSED"
        ok_ttft = "ok" if ttft_added <= TARGETS["ttft_added_ms"] else "MISSED"
        print(
            f"tokens/s missive/direct {tokens_ratio:.3f} (target >= {TARGETS['tokens_ratio']}: {ok_tokens}); "
            f"time to first token p50 added {ttft_added:+.2f} ms "
            f"(target <= {TARGETS['ttft_added_ms']:g} ms: {ok_ttft})"
        )
    for upstream in FORWARD_UPSTREAMS if not args.skip_forward else ():
        section = f"forward to {upstream}"
        rps = f"requests/s (concurrency {args.concurrency})"
        what = (
            f"llama-server /v1/messages, max_tokens {LLAMA_BODY['max_tokens']}"
            if upstream == "llama-server"
            else "instant"
        )
        print(f"\n{section} ({what}): Missive (anthropic engine) against LiteLLM, both against the upstream")
        print(f"{'figure':<36} {'direct':>10} {'litellm':>10} {'missive':>10} {'missive/litellm':>16}")
        for key in (rps, "latency p50 (ms)", "latency p99 (ms)"):
            values = [rounds.median(section, key, path) for path in ("direct", "litellm", "missive")]
            print(
                f"{key:<36}"
                + "".join(f" {v:>10.2f}" for v in values)
                + f" {rounds.paired(section, key, 'missive', 'litellm', ratio):>16.3f}"
            )
        row: dict[str, float] = {}
        for key, short in (("latency p50 (ms)", "p50"), ("latency p99 (ms)", "p99")):
            extra = {
                path: rounds.paired(section, key, path, "direct", added) for path in ("litellm", "missive")
            }
            row.update({f"{path}_added_{short}_ms": value for path, value in extra.items()})
            print(
                f"{'added ' + short + ' (ms)':<36} {'':>10}"
                f" {extra['litellm']:>10.2f} {extra['missive']:>10.2f}"
                f" {ratio(extra['missive'], extra['litellm']):>16.3f}"
            )
        row["rps_ratio_missive_litellm"] = rounds.paired(section, rps, "missive", "litellm", ratio)
        summary[section] = row
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one short round: proves the script works, no figures"
    )
    parser.add_argument("--rounds", type=int, help="rounds per figure (default 3, or 1 with --quick)")
    parser.add_argument(
        "--max-tokens", type=int, help="max_tokens of the front's streams (default 128, 16 with --quick)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="forward: concurrent requests for requests/s"
    )
    parser.add_argument("--litellm", default=str(serving.ROOT / ".cache/bench-venv/bin/litellm"))
    parser.add_argument(
        "--skip-forward", action="store_true", help="the front section only (no LiteLLM needed)"
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.max_tokens = args.max_tokens or (16 if args.quick else 128)
    args.single = 1 if args.quick else 6  # front, 1 client: streams per round
    args.per_client = 1 if args.quick else 3  # front, 8 clients: streams per client per round
    args.serial = 5 if args.quick else 200  # forward: requests one at a time (latency)
    args.requests = 16 if args.quick else 400  # forward: requests at --concurrency (requests/s)
    args.warmup = 1 if args.quick else 20  # forward: requests before each load (at least --concurrency)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    if not args.skip_forward and not Path(args.litellm).exists():
        sys.exit(
            f"LiteLLM is not at {args.litellm}: python -m venv .cache/bench-venv && "
            ".cache/bench-venv/bin/pip install 'litellm[proxy]==1.108.0' (the bench extra's pin), "
            "or --skip-forward"
        )

    rounds, timings = Rounds(), {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="missive-gateway-bench-") as tmp, serving.llama_server() as llama:
        work = Path(tmp)
        section_began = time.monotonic()
        front(llama, args, rounds)
        timings["front"] = time.monotonic() - section_began
        for upstream_name in FORWARD_UPSTREAMS if not args.skip_forward else ():
            section_began = time.monotonic()
            with contextlib.ExitStack() as stack:
                upstream = (
                    llama.base_url
                    if upstream_name == "llama-server"
                    else stack.enter_context(instant_upstream(work))
                )
                forward(upstream_name, upstream, args, rounds, work)
            timings[f"forward to {upstream_name}"] = time.monotonic() - section_began
    summary = report(rounds, args)
    timings["total"] = time.monotonic() - began
    print("\nseconds: " + ", ".join(f"{name} {value:.0f}" for name, value in timings.items()))
    print(
        f"{serving.THREADS} threads, {serving.PARALLEL} parallel slots x {serving.CONTEXT_PER_SLOT} tokens, "
        f"model {serving.default_model_path().name}"
        + (" (--quick: a smoke test, not figures)" if args.quick else "")
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gateway.json").write_text(
        json.dumps(
            {"quick": args.quick, "summary": summary, "rounds": rounds.values, "seconds": timings}, indent=2
        )
    )
    failed = {
        f"{key} ({path})": sum(values)
        for key, paths in rounds.values.items()
        if key.endswith("| failed")
        for path, values in paths.items()
        if sum(values)
    }
    if failed:
        sys.exit(f"requests failed (not 200), so these figures do not count: {failed}")


if __name__ == "__main__":
    main()
