"""The real Claude Code CLI (pinned in tests/clients/package.json, installed by scripts/clients), headless,
against a real Missive and the real model.

Claude Code hides some refusals: it re-sends a refused request without the refused part (a beta, a
system message, a thinking `display`), and it falls back from a broken stream to a plain request.
So every scenario reads the recorder as well as Claude Code's own result: no request may have been
refused unless the scenario is about that refusal, and no host but Missive may have been contacted.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from clients import harness
from clients.recorder import Recorder
from conftest import Server

from missive.wire.betas import KNOWN_BETAS

NOTES = "The secret word is pineapple.\n"
pytestmark = pytest.mark.timeout(300)  # each scenario starts the CLI, some wait out a rate limit
HELLO = "Reply with one word: hello."  # the small model answers at once, whatever the system prompt


def claude(recorder: Recorder, server: Server, tmp: Path, *args: str, key: str | None = None, **env: str) -> harness.Run:
    """`claude ARGS` in a fresh working directory and home, talking to Missive through the recorder."""
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    (work / "notes.txt").write_text(NOTES)
    credentials = {"ANTHROPIC_API_KEY": key or server.api_key}
    if "ANTHROPIC_AUTH_TOKEN" in env:
        credentials = {}
    environment = harness.client_env(
        recorder.url,
        tmp / "home",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        CLAUDE_CODE_MAX_OUTPUT_TOKENS="300",  # a small model that does not end its turn stops soon
        **credentials,
        **env,
    )
    return harness.run([str(harness.CLAUDE), *args], environment, work, timeout=300)


def assert_clean(recorder: Recorder) -> None:
    """Every request Claude Code made was answered, it contacted no other host, and every beta it sent
    is one Missive knows by name."""
    assert recorder.messages(), "Claude Code sent no request"
    assert [(e.status, e.error) for e in recorder.refused()] == []
    assert recorder.foreign == []
    assert {beta for e in recorder.exchanges for beta in e.betas} <= KNOWN_BETAS


def test_print_json(recorder: Recorder, clients_server: Server, tmp_path: Path) -> None:
    run = claude(recorder, clients_server, tmp_path, "-p", HELLO, "--output-format", "json", "--bare")
    assert run.returncode == 0, run.stdout + run.stderr
    result = run.json()
    assert result["is_error"] is False and result["subtype"] == "success" and result["result"].strip()
    assert result["usage"]["output_tokens"] > 0
    assert_clean(recorder)
    first = recorder.messages()[0]
    assert first.path == "/v1/messages?beta=true" and first.body["stream"] is True
    assert "claude-code-20250219" in first.betas and first.headers["anthropic-version"] == "2023-06-01"
    # Its per-turn control message (an empty system message with this turn's effort) was accepted as sent.
    assert any(m["role"] == "system" and "output_config" in m for m in first.body["messages"])


def test_stream_json_with_partial_messages(recorder: Recorder, clients_server: Server, tmp_path: Path) -> None:
    run = claude(
        recorder, clients_server, tmp_path,
        "-p", HELLO, "--output-format", "stream-json", "--verbose", "--include-partial-messages", "--bare",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.json_lines()
    events = [line["event"] for line in lines if line["type"] == "stream_event"]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds
    streamed = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    final = [line for line in lines if line["type"] == "assistant"][-1]
    assert streamed and streamed == "".join(b.get("text", "") for b in final["message"]["content"])
    assert lines[-1]["type"] == "result" and lines[-1]["is_error"] is False
    assert_clean(recorder)


def test_auth_token_instead_of_api_key(recorder: Recorder, clients_server: Server, tmp_path: Path) -> None:
    run = claude(
        recorder, clients_server, tmp_path, "-p", HELLO, "--output-format", "json", "--bare",
        ANTHROPIC_AUTH_TOKEN=clients_server.api_key,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.json()["is_error"] is False
    assert_clean(recorder)
    for exchange in recorder.messages():
        assert exchange.headers["authorization"] == f"Bearer {clients_server.api_key}"
        assert "x-api-key" not in exchange.headers


@pytest.mark.parametrize(
    ("tool", "tool_input", "seen"),
    [("Read", {"file_path": "notes.txt"}, "pineapple"), ("Bash", {"command": "echo $((6 * 7))"}, "42")],
)
def test_bare_with_tools_over_several_turns(
    recorder: Recorder, clients_server: Server, tmp_path: Path, tool: str, tool_input: dict, seen: str
) -> None:
    """The small model calls a tool when told its exact words (what is tested is the protocol, not its
    wits): Claude Code runs the tool and sends the result back in the next turn."""
    call = f'<tool_call name="{tool}">{json.dumps(tool_input)}</tool_call>'
    run = claude(
        recorder, clients_server, tmp_path,
        "-p", f"Repeat after me: {call}", "--output-format", "json", "--bare", "--allowedTools", tool,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.json()["is_error"] is False
    assert_clean(recorder)
    requests = recorder.messages()
    assert len(requests) >= 2  # the call, then its result
    assert {t["name"] for t in requests[0].body["tools"]} >= {"Bash", "Edit", "Read"}
    history = requests[1].body["messages"]
    uses = [b for m in history if isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_use"]
    results = [b for m in history if isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_result"]
    assert [(u["name"], u["input"]) for u in uses] == [(tool, tool_input)]
    assert results and results[0]["tool_use_id"] == uses[0]["id"] and seen in json.dumps(results[0]["content"])


def test_default_mode_compacts_on_prompt_too_long_and_discovers_models(
    recorder: Recorder, clients_server: Server, tmp_path: Path
) -> None:
    """Its ~12-20k-token default prompt does not fit the 8k window: the exact 400 text is what Claude Code
    parses. With model discovery on it lists /v1/models and keeps the Claude-looking ids, which then work."""
    run = claude(
        recorder, clients_server, tmp_path, "-p", "hi", "--output-format", "json",
        CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY="1",
    )  # fmt: skip
    result = run.json()
    assert result["is_error"] is True and result["terminal_reason"] == "prompt_too_long", result
    assert result["api_error_status"] == 400 and "8192" in result["result"]
    refusals = [e.error["error"]["message"] for e in recorder.refused()]
    assert refusals and all(re.fullmatch(r"prompt is too long: \d+ tokens > 8192 maximum", m) for m in refusals)
    body = recorder.messages()[0].body  # every shape of the full client parsed: the refusal is the length
    assert any(m["role"] == "system" for m in body["messages"]) and len(body["tools"]) > 3
    assert recorder.foreign == []

    listing = [e for e in recorder.exchanges if e.path.startswith("/v1/models")]
    assert listing and listing[0].path == "/v1/models?limit=1000" and listing[0].status == 200
    cached = json.loads((tmp_path / "home" / ".claude" / "cache" / "gateway-models.json").read_text())
    discovered = [model["id"] for model in cached["models"]]
    assert "claude-smollm2-135m-instruct" in discovered
    recorder.clear()
    run = claude(recorder, clients_server, tmp_path, "-p", HELLO, "--output-format", "json", "--bare",
                 "--model", discovered[0])  # fmt: skip
    assert run.json()["is_error"] is False
    assert_clean(recorder)
    assert {e.body["model"] for e in recorder.messages()} == {discovered[0]}


def _limited_key(server: Server) -> str:
    created = server.cli("workspaces", "create", f"limited-{time.monotonic_ns()}", "--tier", "six-per-minute")
    workspace = re.search(r"wrkspc_\w+", created.stdout + created.stderr)
    assert workspace, created
    made = server.cli("keys", "create", "--name", "limited", "--workspace", workspace.group(0))
    key = re.search(r"sk-missive-[\w-]{43}", made.stdout + made.stderr)
    assert key, made
    return key.group(0)


def _keep_empty(server: Server, key: str, recorder: Recorder) -> threading.Thread:
    """Spend the workspace's requests until Claude Code sends its first one, so that it meets an empty
    bucket however long it takes to start."""
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    ask = {"model": "claude-haiku-4-5", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}

    def spend() -> None:
        deadline = time.monotonic() + 120
        while not recorder.messages() and time.monotonic() < deadline:
            httpx.post(f"{server.base_url}/v1/messages", json=ask, headers=headers, timeout=60)
            time.sleep(0.2)

    thread = threading.Thread(target=spend, daemon=True)
    thread.start()
    while thread.is_alive() and httpx.post(
        f"{server.base_url}/v1/messages", json=ask, headers=headers, timeout=60
    ).status_code != 429:
        pass  # the bucket is empty before Claude Code starts
    return thread


@pytest.mark.parametrize("retries", ["default", "0"])
def test_rate_limited(recorder: Recorder, clients_server: Server, tmp_path: Path, retries: str) -> None:
    """A workspace at 6 requests per minute, its bucket empty: Claude Code gets a 429 with `retry-after`
    and the rate-limit headers. It waits as told and succeeds; with no retries left it says why."""
    key = _limited_key(clients_server)
    spender = _keep_empty(clients_server, key, recorder)
    env = {} if retries == "default" else {"CLAUDE_CODE_MAX_RETRIES": retries}
    started = time.monotonic()
    run = claude(recorder, clients_server, tmp_path, "-p", HELLO, "--output-format", "json", "--bare",
                 key=key, **env)  # fmt: skip
    spender.join(timeout=60)
    result = run.json()
    limited = [e for e in recorder.exchanges if e.status == 429]
    assert limited and limited[0].error["error"]["type"] == "rate_limit_error"
    headers = limited[0].response_headers
    assert int(headers["retry-after"]) > 0 and headers["anthropic-ratelimit-requests-limit"] == "6"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0" and "anthropic-ratelimit-requests-reset" in headers
    assert recorder.foreign == []
    if retries == "default":
        assert result["is_error"] is False, result
        assert len(limited) <= 2 and recorder.messages()[-1].status == 200  # no retry loop without end
        assert time.monotonic() - started >= 5  # it waited for the bucket (retry-after was about 10 s)
    else:
        assert result["is_error"] is True and result["api_error_status"] == 429, result
        assert len(limited) == 1 and "rate limit" in result["result"].lower()


def test_through_the_agent_sdk(recorder: Recorder, clients_server: Server, tmp_path: Path) -> None:
    """The Claude Agent SDK for Python runs the CLI it bundles (often newer than npm's): the same checks."""
    env = harness.client_env(
        recorder.url, tmp_path / "home", ANTHROPIC_API_KEY=clients_server.api_key,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", CLAUDE_CODE_MAX_OUTPUT_TOKENS="300",
    )  # fmt: skip
    run = harness.run([str(harness.PYTHON), str(harness.SCRIPTS / "agent_sdk.py"), HELLO], env, tmp_path, 300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = run.json()
    assert report["result"]["is_error"] is False and "".join(report["texts"]).strip(), report
    assert_clean(recorder)
    agents = {e.headers.get("user-agent", "") for e in recorder.messages()}
    assert all(agent.startswith("claude-cli/") for agent in agents), agents
