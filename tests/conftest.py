"""One real Missive server, with the real embedded model, shared by the whole test session.

The server runs as a subprocess (`python -m missive serve`) on a free port, with a fresh data
directory, so the tests also cover first start: the key it prints once is the key the tests use.
Its log is kept in a file that tests can read (e.g. to see a generation being cancelled).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import pytest
from clients import harness
from clients.recorder import Recorder

# A second model entry over the same GGUF: small limits, an explicit alias. It makes the registry
# real (several models, pagination) and makes the context-limit tests cheap.
CONFIG = """
default_model = "smollm2-135m-instruct"
ping_interval = 0.5

[local]
parallel = 4

# url sources may reach 127.0.0.2 (the document tests serve files there); 127.0.0.1 stays refused.
# PDF pages are also given as pictures to the vision model (tests/test_documents.py).
[media]
url_allow = ["127.0.0.2"]
pdf_pages_as_images = true

[[models]]
id = "smollm2-135m-instruct"
display_name = "SmolLM2 135M Instruct"
context_window = 4096
min_cache_tokens = 64

[[models]]
id = "smollm2-small"
context_window = 256
max_output_tokens = 200
aliases = ["tiny"]

[[models]]
id = "smollm2-think"
context_window = 2048
reasoning = true

[[models]]
id = "smollm2-hermes"
context_window = 2048
min_cache_tokens = 64
chat_template_file = '{hermes}'

[[models]]
id = "smollm2-qwen3-coder"
context_window = 2048
min_cache_tokens = 64
chat_template_file = '{qwen3_coder}'

[[models]]
id = "smollm2-glm45"
context_window = 2048
min_cache_tokens = 64
chat_template_file = '{glm45}'

[[models]]
id = "smollm2-llama3"
context_window = 2048
min_cache_tokens = 64
chat_template_file = '{llama3}'

[[models]]
id = "smollm2-mistral-v3"
context_window = 2048
min_cache_tokens = 64
chat_template_file = '{mistral_v3}'

[[models]]
id = "smollm2-mistral-v11"
context_window = 2048
min_cache_tokens = 64
chat_template_file = '{mistral_v11}'

[[models]]
id = "smollm2-harmony"
context_window = 2048
min_cache_tokens = 64
chat_template_file = '{harmony}'

# The same GGUF with a projector of generated weights (tests/projector.py), written before the server starts.
[[models]]
id = "smollm2-vision"
context_window = 2048
min_cache_tokens = 16
mmproj = '{mmproj}'
"""
for _name in ("hermes", "qwen3_coder", "glm45", "llama3", "mistral_v3", "mistral_v11", "harmony"):
    CONFIG = CONFIG.replace("{%s}" % _name, str(Path(__file__).parent / "templates" / f"{_name}.jinja"))


# A conversation that keeps the model generating for as long as a test needs (it counts on).
COUNTING = [
    {"role": "user", "content": "Count from 1 to 5000, separated by commas."},
    {"role": "assistant", "content": "1, 2, 3, 4,"},
]


@dataclass
class Server:
    base_url: str
    api_key: str
    log_path: Path
    data_dir: Path
    config_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float = 15.0, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.compile(pattern).search(self.log(), after)
            if match:
                return match
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not in the server log within {timeout} s")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MISSIVE_DATA_DIR": str(self.data_dir), "MISSIVE_CONFIG": str(self.config_path)}
        return subprocess.run(
            [sys.executable, "-m", "missive", *args], env=env, capture_output=True, text=True, timeout=60
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    root: Path, config: str, log_name: str = "server.log", port: int | None = None
) -> tuple[subprocess.Popen[bytes], Server]:
    """Start `python -m missive serve` on `root/data` with `config`; returns once it takes requests."""
    config_path = root / "missive.toml"
    config_path.write_text(config)
    data_dir = root / "data"
    log_path = root / log_name
    port = port or free_port()
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
    return process, Server(f"http://127.0.0.1:{port}", key.group(1) if key else "", log_path, data_dir, config_path)


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
def run_server(root: Path, config: str) -> Iterator[Server]:
    """A server with a fresh data directory, for the length of the block."""
    process, server = launch(root, config)
    try:
        assert server.api_key, "the first start must print a key"
        yield server
    finally:
        stop(process)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from projector import write_projector

    from missive.engines.local.default_model import default_model_path

    root = tmp_path_factory.mktemp("missive")
    mmproj = write_projector(root / "projector.gguf", default_model_path())
    with run_server(root, CONFIG.replace("{mmproj}", str(mmproj))) as running:
        yield running


@pytest.fixture(scope="session")
def client(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def http(server: Server) -> Iterator[httpx.Client]:
    headers = {"x-api-key": server.api_key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http_client:
        yield http_client


# --- the real clients (tests/clients/) ----------------------------------------------------------


@pytest.fixture(scope="session")
def clients_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Missive configured for the real clients (tests/clients/harness.py), for the whole session."""
    harness.require_clients()
    with run_server(tmp_path_factory.mktemp("missive-clients"), harness.CONFIG) as running:
        yield running


@pytest.fixture
def recorder(clients_server: Server) -> Iterator[Recorder]:
    """A recording proxy in front of `clients_server`, fresh for each test."""
    proxy = Recorder(clients_server.base_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
