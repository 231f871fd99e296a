"""llama.cpp's own llama-server, as an upstream for the remote engines' tests and as the benchmarks' peer.

`scripts/llama_server` builds it (scripts/test runs that first); `start` runs it on the default model
and waits, bounded, until it answers `/health`.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from missive.engines.local.default_model import default_model_path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / ".cache" / "bench" / "llama-server"
MISSING = f"llama-server is not built: run scripts/llama_server (scripts/test does), looked for {BINARY}"


def ready(url: str, process: subprocess.Popen[bytes], log_path: Path | None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            log = log_path.read_text() if log_path else ""
            raise RuntimeError(f"llama-server did not start:\n{log[-3000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def start(port: int, *args: str, log_path: Path | None = None, binary: Path = BINARY) -> Iterator[subprocess.Popen[bytes]]:
    """llama-server on the default model at `port`, with `args`; stopped (bounded) at the end of the block."""
    command = [str(binary), "-m", str(default_model_path()), "--port", str(port), *args]
    output = log_path.open("w") if log_path else subprocess.DEVNULL
    try:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
    finally:
        if log_path:
            output.close()  # type: ignore[union-attr]
    try:
        ready(f"http://127.0.0.1:{port}", process, log_path)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
