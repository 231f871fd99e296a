"""Missive servers for the platform tests: real `missive serve` processes on a chosen store and limiter.

One configuration per backend pair: SQLite with in-process buckets, PostgreSQL with Redis buckets.
Tiers with small limits make rate limiting observable; the test model is priced so that spend moves.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from conftest import Server, free_port

BACKENDS = ("sqlite-memory", "postgresql-redis")

CONFIG = """
default_model = "smollm2-135m-instruct"
ping_interval = 0.5
{database}

[local]
threads = 1  # two front ends may generate at once in a test; each keeps to one core

[[models]]
id = "smollm2-135m-instruct"
context_window = 2048

[ledger]
checkpoint_interval = 0.2
dead_after = 1.0

[rate_limits]
backend = "{limiter}"
redis_url = "{redis_url}"
redis_prefix = "{prefix}"

[rate_limits.tiers.tight]
requests_per_minute = 5
input_tokens_per_minute = 1000000
output_tokens_per_minute = 1000000
count_tokens_requests_per_minute = 3

[rate_limits.tiers.small-itpm]
requests_per_minute = 1000
input_tokens_per_minute = 60
output_tokens_per_minute = 100000

[pricing.models.smollm2-135m-instruct]
input = 1000
output = 2000
"""


@dataclass
class Platform:
    server: Server
    admin_key: str
    database_url: str
    process: subprocess.Popen[bytes]
    config: str
    root: Path

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"anthropic-version": "2023-06-01", "x-api-key": key or self.server.api_key}
        return httpx.Client(base_url=self.server.base_url, headers=headers, timeout=60)

    def admin(self) -> httpx.Client:
        headers = {"anthropic-version": "2023-06-01", "x-api-key": self.admin_key}
        return httpx.Client(base_url=self.server.base_url, headers=headers, timeout=60)


def config_for(backend: str, database_url: str, prefix: str, redis_url: str) -> str:
    limiter = "redis" if backend == "postgresql-redis" else "memory"
    database = f'database_url = "{database_url}"'
    return CONFIG.format(database=database, limiter=limiter, redis_url=redis_url, prefix=prefix)


def launch(root: Path, config: str, log_name: str = "server.log") -> tuple[subprocess.Popen[bytes], Server]:
    """Start `missive serve` on `root/data` with `config`; returns once it takes requests."""
    config_path = root / "missive.toml"
    config_path.write_text(config)
    data_dir = root / "data"
    log_path = root / log_name
    port = free_port()
    env = {**os.environ, "MISSIVE_DATA_DIR": str(data_dir), "MISSIVE_CONFIG": str(config_path)}
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-u", "-m", "missive", "serve", "--port", str(port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while "Application startup complete" not in log_path.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server did not start:\n{log_path.read_text()}")
        time.sleep(0.05)
    key = re.search(r"^\s+(sk-missive-\S+)$", log_path.read_text(), re.M)
    return process, Server(
        f"http://127.0.0.1:{port}", key.group(1) if key else "", log_path, data_dir, config_path
    )


def stop(process: subprocess.Popen[bytes], hard: bool = False) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def platform(root: Path, backend: str, database_url: str, prefix: str, redis_url: str) -> Iterator[Platform]:
    config = config_for(backend, database_url, prefix, redis_url)
    process, server = launch(root, config)
    try:
        made = server.cli("keys", "create", "--admin", "--name", "test admin")
        assert made.returncode == 0, made.stderr
        yield Platform(server, made.stdout.strip().splitlines()[-1], database_url, process, config, root)
    finally:
        stop(process)
