"""Running one real client's script through its own Recorder, and checks the client tests share.

A script runs once per test module (it costs model time); the module's tests then read the same
observations: what the client printed, and every exchange the recorder saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients import harness
from clients.recorder import Exchange, Recorder

# The stop reasons the Messages API defines.
STOP_REASONS = {
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "model_context_window_exceeded",
}


@dataclass
class Observed:
    out: dict[str, Any]  # the JSON object the script printed
    recorder: Recorder  # stopped: every exchange it saw

    @property
    def exchanges(self) -> list[Exchange]:
        return self.recorder.exchanges

    @property
    def foreign(self) -> list[str]:
        return self.recorder.foreign

    def requests(self, path: str) -> list[Exchange]:
        return self.recorder.requests(path)

    def refused(self) -> list[Exchange]:
        return self.recorder.refused()


def observe(base_url: str, api_key: str, workdir: Path, args: list[str], timeout: float) -> Observed:
    """Run a client script against Missive (`base_url`) through a fresh recorder."""
    proxy = Recorder(base_url)
    proxy.start()
    try:
        env = harness.client_env(proxy.url, workdir / "home", ANTHROPIC_API_KEY=api_key)
        run = harness.run(args, env=env, cwd=workdir, timeout=timeout)
    finally:
        proxy.stop()
    assert run.returncode == 0, f"{args[-1]} exited {run.returncode}:\n{run.stderr[-4000:]}"
    return Observed(run.json(), proxy)


def credentials(exchanges: list[Exchange]) -> set[tuple[str | None, str | None, str | None]]:
    """(anthropic-version, authorization, x-api-key) as each request sent them."""
    return {
        (e.headers.get("anthropic-version"), e.headers.get("authorization"), e.headers.get("x-api-key"))
        for e in exchanges
    }


def text_of(content: list[dict[str, Any]]) -> str:
    return "".join(block["text"] for block in content if block["type"] == "text")


def tool_uses(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [block for block in content if block["type"] == "tool_use"]
