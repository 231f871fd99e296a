"""Authentication (spec §2.1): x-api-key or Bearer, the first-start key, keys made and disabled by the CLI."""

from __future__ import annotations

import anthropic
import httpx
import pytest
import sqlalchemy as sa
from conftest import Server

PAYLOAD = {"model": "claude-haiku-4-5", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
VERSION = {"anthropic-version": "2023-06-01"}


def post(server: Server, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/messages", json=PAYLOAD, headers={**VERSION, **headers}, timeout=30)


def auth_error(response: httpx.Response) -> str:
    assert response.status_code == 401
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["type"] == "authentication_error"
    return response.json()["error"]["message"]


def test_missing_and_wrong_keys(server: Server) -> None:
    assert auth_error(post(server, {})) == "x-api-key header is required"
    assert auth_error(post(server, {"x-api-key": "sk-missive-wrong"})) == "invalid x-api-key"
    assert auth_error(post(server, {"authorization": "Bearer sk-missive-wrong"})) == "invalid x-api-key"
    for path in ("/v1/models", "/v1/models/tiny"):
        response = httpx.get(f"{server.base_url}{path}", headers=VERSION)
        assert auth_error(response) == "x-api-key header is required"


def test_bearer_token_works_and_wins_over_x_api_key(server: Server) -> None:
    assert post(server, {"authorization": f"Bearer {server.api_key}"}).status_code == 200
    # Claude Code can send both; the Bearer token is the one that counts
    assert post(server, {"authorization": f"Bearer {server.api_key}", "x-api-key": "sk-ant-real-key"}).status_code == 200
    both = post(server, {"authorization": "Bearer sk-missive-wrong", "x-api-key": server.api_key})
    assert auth_error(both) == "invalid x-api-key"


def test_sdk_auth_token_and_authentication_error(server: Server) -> None:
    bearer = anthropic.Anthropic(base_url=server.base_url, auth_token=server.api_key, api_key=None, max_retries=0)
    assert bearer.messages.create(**PAYLOAD).usage.output_tokens >= 1
    wrong = anthropic.Anthropic(base_url=server.base_url, api_key="sk-missive-nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(**PAYLOAD)
    assert caught.value.type == "authentication_error"


def test_first_start_key_is_stored_as_a_hash_only(server: Server) -> None:
    engine = sa.create_engine(f"sqlite:///{server.data_dir / 'missive.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM api_keys")).mappings().all()
    engine.dispose()
    first = next(row for row in rows if row["name"] == "first key")
    values = " ".join(str(value) for row in rows for value in row.values())
    assert server.api_key not in values
    assert first["hint"].startswith("sk-missive-") and server.api_key.endswith(first["hint"][-4:])
    assert "shown only this once" in server.log()


def test_cli_creates_and_disables_keys_with_immediate_effect(server: Server) -> None:
    created = server.cli("keys", "create", "--name", "ci")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert post(server, {"x-api-key": secret}).status_code == 200
    listed = server.cli("keys", "list")
    line = next(line for line in listed.stdout.splitlines() if line.endswith(" ci"))
    assert secret not in listed.stdout
    key_id = line.split()[0]
    assert server.cli("keys", "disable", key_id).returncode == 0
    assert auth_error(post(server, {"x-api-key": secret})) == "invalid x-api-key"
