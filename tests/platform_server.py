"""Missive servers for the platform tests: real `missive serve` processes on a chosen store and limiter.

One configuration per backend pair: SQLite with in-process buckets, PostgreSQL with Redis buckets.
Tiers with small limits make rate limiting observable; the test model is priced so that spend moves.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from conftest import Server, launch, stop

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
