"""The real clients, as installed by `scripts/clients`, and the Missive server they run against.

The server is its own process with a configuration for clients: the model's `temperature` is 0 for
requests that set none (API version 2026-10-21 takes no sampling parameters, and Claude Code sends
none), so what the small model writes is repeatable; a context window that holds Claude Code's
`--bare` prompt; and a tier with a tiny RPM for the rate-limit scenario.

Every client talks to Missive through a `Recorder`, so a test sees each request and each refusal,
also those a client hides by retrying.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / ".cache" / "clients"
NODE_DIR = CLIENTS / "node"
CLAUDE = NODE_DIR / "node_modules" / ".bin" / "claude"
PYTHON = CLIENTS / "venv" / "bin" / "python"
SCRIPTS = Path(__file__).resolve().parent

CONFIG = """
default_model = "smollm2-135m-instruct"
ping_interval = 0.5

[local]
parallel = 2

[[models]]
id = "smollm2-135m-instruct"
display_name = "SmolLM2 135M Instruct"
context_window = 8192
temperature = 0
aliases = ["claude-smollm2"]

[rate_limits.tiers.six-per-minute]
requests_per_minute = 6
"""


def require_clients() -> None:
    if not CLAUDE.exists() or not PYTHON.exists():
        raise RuntimeError("the real clients are not installed: run scripts/clients (scripts/test does)")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip().startswith("{")]


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> Run:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return Run(done.returncode, done.stdout, done.stderr)


def client_env(base_url: str, home: Path, **extra: str) -> dict[str, str]:
    """A clean environment: only what a user would set, plus a proxy that catches any other host."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "HTTPS_PROXY": base_url,
        "HTTP_PROXY": base_url,
        "NO_PROXY": "127.0.0.1,localhost",
        **extra,
    }
