"""PostgreSQL or Redis going away under a running Missive: requests fail fast with a 503 the SDKs retry,
nothing acknowledged is lost, and service resumes by itself when the back end returns.

The test runs its own `redis-server` and PostgreSQL (from the Debian packages), so that it can stop them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
import sqlalchemy as sa
from conftest import COUNTING, Server, free_port, launch, stop

ASK = {"model": "smollm2-135m-instruct", "max_tokens": 3, "messages": [{"role": "user", "content": "Say hi."}]}


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        pytest.skip(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return str(found)


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Postgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="missive-pg-"))
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(self.root / "data"), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True, timeout=60)
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.root / "data"), *args]),
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "-l",
                  str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), __import__("socket").create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Postgres, Redis, Server]]:
    postgres, redis = Postgres(), Redis()
    config = f"""
default_model = "smollm2-135m-instruct"
database_url = "{postgres.url}"
[local]
threads = 1
[[models]]
id = "smollm2-135m-instruct"
context_window = 2048
[ledger]
checkpoint_interval = 0.5
[rate_limits]
backend = "redis"
redis_url = "redis://127.0.0.1:{redis.port}/0"
"""
    process, server = launch(tmp_path_factory.mktemp("outages"), config, "outages.log")
    try:
        yield postgres, redis, server
    finally:
        stop(process)
        redis.stop()
        postgres.close()


def http(server: Server) -> httpx.Client:
    headers = {"x-api-key": server.api_key, "anthropic-version": "2023-06-01"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=30)


def refused_fast(server: Server, backend: str) -> None:
    with http(server) as client:
        started = time.monotonic()
        response = client.post("/v1/messages", json=ASK)
        took = time.monotonic() - started
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error" and backend in body["error"]["message"]
    assert response.headers["x-should-retry"] == "true" and response.headers["request-id"].startswith("req_")
    assert took < 10, f"an outage must fail fast, not hang ({took:.1f} s)"


def served_again(server: Server, within: float = 20) -> None:
    deadline = time.monotonic() + within
    with http(server) as client:
        while True:
            status = client.post("/v1/messages", json=ASK).status_code
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert status == 200


def test_redis_away_is_a_fast_503_and_service_resumes(backends: tuple[Postgres, Redis, Server]) -> None:
    _, redis, server = backends
    served_again(server)
    redis.stop()
    refused_fast(server, "rate limiter")
    redis.start()
    served_again(server)


def test_postgres_away_is_a_fast_503_and_an_acknowledged_stream_is_still_settled(
    backends: tuple[Postgres, Redis, Server],
) -> None:
    postgres, _, server = backends
    served_again(server)
    client = anthropic.Anthropic(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=60)
    seen: list[str] = []
    ids: list[str] = []

    def stream() -> None:
        with client.messages.stream(model=ASK["model"], max_tokens=200, messages=COUNTING) as events:
            for text in events.text_stream:
                seen.append(text)
            ids.append(events.get_final_message().id)

    streaming = threading.Thread(target=stream)
    streaming.start()
    while len(seen) < 3 and streaming.is_alive():
        time.sleep(0.01)
    postgres.stop()  # the stream was admitted and recorded: it must finish, and be settled later
    streaming.join(60)
    assert ids and len(seen) > 3
    refused_fast(server, "usage store")
    postgres.start()
    served_again(server)
    engine = sa.create_engine(postgres.url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the settlement the store refused is written once it is back
        with engine.connect() as conn:
            statuses = [row[0] for row in conn.execute(sa.text("SELECT status FROM usage_records"))]
        if "in_flight" not in statuses:
            break
        time.sleep(0.5)
    engine.dispose()
    assert statuses and "in_flight" not in statuses and statuses.count("succeeded") >= 3
