"""The console (docs/console.md) in a real browser: Debian's headless Chromium, driven by Playwright,
against the shared real server and model. Each test signs in in a fresh browser context; screenshots
go to .cache/screenshots/ (ignored; CI keeps them as artefacts)."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
from conftest import Server

playwright_sync = pytest.importorskip("playwright.sync_api")

SHOTS = Path(__file__).resolve().parent.parent / ".cache" / "screenshots"
CHROMIUM = os.environ.get("MISSIVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/browser installs Debian's)")
WIDE, NARROW = {"width": 1360, "height": 900}, {"width": 420, "height": 860}


def _admin_key(server: Server, name: str, workspace: str | None = None) -> str:
    args = ["keys", "create", "--admin", "--name", name] + (["--workspace", workspace] if workspace else [])
    done = server.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def admin_secret(server: Server) -> str:
    return _admin_key(server, "console tests")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_sync.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser, server: Server):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=server.base_url, viewport=WIDE, accept_downloads=True)
    context.set_default_timeout(30_000)
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())  # the console's "Archive …?" confirmations
    yield opened
    context.close()


def shot(page, name: str, full: bool = True) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


def sign_in(page, secret: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/console/sign-in")
    page.fill("#key", secret)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/console/usage"))


def sdk(server: Server, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=secret, max_retries=0, timeout=60)


def ask(client: anthropic.Anthropic) -> anthropic.types.Message:
    return client.messages.create(
        model="smollm2-135m-instruct", max_tokens=4, messages=[{"role": "user", "content": "Say hi."}]
    )


def create_key(page, name: str, workspace: str = "default") -> str:  # type: ignore[no-untyped-def]
    page.goto("/console/keys")
    page.fill("input[name=name]", name)
    page.select_option("select[name=workspace_id]", workspace)
    page.click("form[action='/console/keys'] button[type=submit]")
    return page.text_content("#secret").strip()


def create_workspace(page, name: str, limit: str = "") -> str:  # type: ignore[no-untyped-def]
    page.goto("/console/workspaces")
    form = page.locator("form[action='/console/workspaces']")
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=monthly_spend_limit]").fill(limit)
    form.locator("button[type=submit]").click()
    page.wait_for_selector(".flash.ok")
    row = page.locator("tr[data-workspace]", has_text=name)
    return row.get_attribute("data-workspace")


def test_sign_in_create_a_key_use_it_disable_it(page, server: Server, admin_secret: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/console/keys")
    page.wait_for_url(re.compile(r"/console/sign-in"))  # not signed in: to the sign-in page
    shot(page, "sign-in")
    page.fill("#key", server.api_key)  # an ordinary API key is not an admin key
    page.click("button[type=submit]")
    assert "not an active admin key" in page.text_content(".flash.bad")
    sign_in(page, admin_secret)
    cookie = next(c for c in page.context.cookies() if c["name"] == "missive_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    name = f"browser-{uuid.uuid4().hex[:6]}"
    secret = create_key(page, name)
    assert secret.startswith("sk-missive-") and "shown only this once" in page.text_content("#new-key")
    shot(page, "keys-created")
    client = sdk(server, secret)
    assert ask(client).usage.output_tokens > 0

    row = page.locator(f"tr[data-name='{name}']")
    row.get_by_role("button", name="Disable").click()
    page.wait_for_selector(".flash.ok")
    assert "inactive" in page.locator(f"tr[data-name='{name}']").text_content()
    with pytest.raises(anthropic.AuthenticationError):
        ask(client)

    page.locator(f"tr[data-name='{name}']").get_by_role("button", name="Enable").click()
    page.wait_for_selector(".flash.ok")
    assert ask(client).usage.output_tokens > 0
    renamed = name + "-renamed"
    row = page.locator(f"tr[data-name='{name}']")
    row.locator("input[name=name]").fill(renamed)
    row.get_by_role("button", name="Rename").click()
    page.wait_for_selector(".flash.ok")
    row = page.locator(f"tr[data-name='{renamed}']")
    assert "within the hour" in row.text_content()  # last used
    shot(page, "keys")
    row.get_by_role("button", name="Archive").click()
    page.wait_for_selector(".flash.ok")
    with pytest.raises(anthropic.AuthenticationError):
        ask(client)


def test_workbench_streams_a_reply_with_its_usage_and_code(page, server: Server, admin_secret: str) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, admin_secret)
    page.goto("/console/workbench")
    page.fill("#max_tokens", "24")
    page.fill("#system", "You are terse.")
    page.fill(".msg textarea", "Count from 1 to 20, separated by commas.")
    page.evaluate(  # record every change of the reply's text: a stream arrives in several pieces
        """() => { window.lengths = []; new MutationObserver(() => window.lengths.push(
               document.getElementById('reply').textContent.length)).observe(document.getElementById('reply'),
               {childList: true, characterData: true, subtree: true}); }"""
    )
    page.click("#run")
    page.wait_for_function("document.getElementById('state').textContent === 'done'", timeout=90_000)
    assert page.locator("#bench-error").is_hidden()
    assert page.text_content("#reply").strip()
    assert len(set(page.evaluate("window.lengths"))) > 2, "the reply did not stream in pieces"
    assert int(page.text_content("[data-u=output_tokens]").replace(",", "")) > 0
    assert int(page.text_content("[data-u=input_tokens]").replace(",", "")) > 0
    assert page.text_content("#stop-reason") in ("max_tokens", "end_turn")
    code = page.text_content("#code")
    assert "anthropic.Anthropic(base_url=" in code and "Count from 1 to 20" in code
    page.click(".tab[data-lang=curl]")
    assert "anthropic-version: 2023-06-01" in page.text_content("#code")
    page.click(".tab[data-lang=python]")
    shot(page, "workbench")

    page.click("summary")  # a tools JSON that the API refuses names the field
    page.fill("#tools", '[{"name": "bad name!", "input_schema": {"type": "object"}}]')
    page.click("#check")
    page.wait_for_selector("#bench-error:not([hidden])")
    assert "tools.0" in page.text_content("#bench-error")
    page.fill("#tools", '[{"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]')
    page.click("#check")
    page.wait_for_function("document.getElementById('tools-status').textContent.includes('accepts')")


def test_usage_appears_in_the_charts_and_the_csv(page, server: Server, admin_secret: str) -> None:  # type: ignore[no-untyped-def]
    reply = ask(sdk(server, server.api_key))
    sign_in(page, admin_secret)
    page.goto("/console/usage?range=24h&group=model")
    page.wait_for_function("document.body.dataset.chartsDrawn === '1'")
    output = int(page.text_content("[data-total=output_tokens]").replace(",", ""))
    assert output >= reply.usage.output_tokens
    assert page.locator("#chart-kinds").is_visible() and page.locator("#chart-groups").is_visible()
    assert "smollm2-135m-instruct" in page.text_content("#usage-table")
    shot(page, "usage")
    page.goto("/console/usage?range=7d&group=api_key_id")
    page.wait_for_function("document.body.dataset.chartsDrawn === '1'")
    assert "first key" in page.text_content("#usage-table")  # the server's first key, by name
    with page.expect_download() as download:
        page.click("text=Usage CSV")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert any(row["api_key_id_name"] == "first key" and int(row["output_tokens"]) > 0 for row in rows)
    page.set_viewport_size(NARROW)  # usable at a narrow width: the nav moves to the top, charts stack
    page.goto("/console/usage?range=7d&group=model")
    page.wait_for_function("document.body.dataset.chartsDrawn === '1'")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "usage-narrow")


def test_a_spend_limit_set_in_the_console_is_enforced(page, server: Server, admin_secret: str) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, admin_secret)
    workspace = create_workspace(page, f"Limited {uuid.uuid4().hex[:6]}", limit="0.00")
    client = sdk(server, create_key(page, "limited key", workspace))
    with pytest.raises(anthropic.BadRequestError, match="usage limits"):
        ask(client)
    page.goto("/console/workspaces")
    form = page.locator(f"#edit-{workspace}")
    form.locator("input[name=monthly_spend_limit]").fill("25")
    form.get_by_role("button", name="Save").click()
    page.wait_for_selector(".flash.ok")
    assert (
        page.locator(f"#edit-{workspace} input[name=monthly_spend_limit]").input_value().startswith("25.00")
    )
    shot(page, "workspaces")
    assert ask(client).usage.output_tokens > 0
    form = page.locator(f"#edit-{workspace}")
    form.locator("input[name=monthly_spend_limit]").fill("not money")
    form.get_by_role("button", name="Save").click()
    assert "monthly_spend_limit" in page.text_content(".flash.bad")  # the API's error, naming the field
    page.goto("/console/limits")
    assert page.locator("section.card", has_text=workspace).is_visible()
    shot(page, "limits")


def test_a_workspace_admin_cannot_see_another_workspace(page, server: Server, admin_secret: str) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, admin_secret)
    mine = create_workspace(page, f"Team A {uuid.uuid4().hex[:6]}")
    other = create_workspace(page, f"Team B {uuid.uuid4().hex[:6]}")
    create_key(page, "team-a key", mine)
    create_key(page, "team-b key", other)
    other_key = page.locator("tr[data-key]", has_text=other).first.get_attribute("data-key")
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r"/console/sign-in"))

    sign_in(page, _admin_key(server, "team a admin", mine))
    assert "Workspace admin" in page.text_content(".chip")
    page.goto("/console/keys")
    assert page.locator("tr[data-name='team-a key']").count() == 1
    assert page.locator("tr[data-name='team-b key']").count() == 0 and other not in page.text_content("table")
    page.goto(f"/console/keys?workspace={other}")
    assert page.locator("tr[data-key]").count() == 0
    page.goto("/console/workspaces")
    assert page.locator("tr[data-workspace]").count() == 1 and other not in page.content()
    assert page.locator("form[action='/console/workspaces']").count() == 0  # cannot create workspaces
    page.goto("/console/usage?range=7d&group=workspace_id")
    assert other not in page.content()
    csrf = page.get_attribute("meta[name=csrf-token]", "content")
    answer = page.request.post(
        f"/console/keys/{other_key}", form={"csrf": csrf, "status": "inactive"}, max_redirects=0
    )
    assert answer.status == 303 and "not+found" in answer.headers["location"]
    headers = {"x-csrf-token": csrf, "content-type": "application/json"}
    answer = page.request.post(f"/console/workbench/messages?workspace={other}", data="{}", headers=headers)
    assert answer.status == 404
    shot(page, "workspace-admin-keys")


def test_csrf_and_ended_sessions_are_refused(page, server: Server, admin_secret: str) -> None:  # type: ignore[no-untyped-def]
    sign_in(page, admin_secret)
    for form in ({"name": "csrf-less"}, {"name": "forged", "csrf": "x" * 43}):
        answer = page.request.post("/console/keys", form=form, max_redirects=0)
        assert answer.status == 403 and "CSRF" in answer.text()
    answer = page.request.post(
        "/console/workbench/messages", data="{}", headers={"content-type": "application/json"}
    )
    assert answer.status == 403
    page.goto("/console/keys")
    assert "csrf-less" not in page.content() and "forged" not in page.content()
    login = httpx.post(f"{server.base_url}/console/sign-in", data={"key": admin_secret, "csrf": "guess"})
    assert login.status_code == 403  # the sign-in form has its own double-submit token

    # an expired session: the server no longer honours it, and says so
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "missive_console")
    from missive.store import console_sessions, db

    database = db.connect(server.data_dir / "missive.db", migrate=False)
    try:
        console_sessions.expire_session(database, token)
    finally:
        database.dispose()
    page.goto("/console/keys")
    page.wait_for_url(re.compile(r"/console/sign-in"))
    assert "session has ended" in page.text_content(".flash.bad")

    # sign-out ends the session on the server: the old cookie no longer works
    sign_in(page, admin_secret)
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "missive_console")
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r"/console/sign-in"))
    stale = httpx.get(f"{server.base_url}/console/keys", cookies={"missive_console": token})
    assert stale.status_code == 303 and "/console/sign-in" in stale.headers["location"]


def test_batches_and_models_pages(page, server: Server, admin_secret: str) -> None:  # type: ignore[no-untyped-def]
    client = sdk(server, server.api_key)
    batch = client.messages.batches.create(
        requests=[
            {
                "custom_id": f"r{i}",
                "params": {
                    "model": "smollm2-135m-instruct",
                    "max_tokens": 3,
                    "messages": [{"role": "user", "content": "Hi"}],
                },
            }
            for i in range(2)
        ]
    )
    sign_in(page, admin_secret)
    page.goto("/console/batches")
    row = page.locator(f"tr[data-batch='{batch.id}']")
    assert row.is_visible()
    if "in progress" in row.text_content():
        row.get_by_role("button", name="Cancel").click()
        page.wait_for_selector(".flash.ok")
    link = page.locator(f"tr[data-batch='{batch.id}']").get_by_role("link", name="Results (JSONL)")
    deadline = time.monotonic() + 90
    while not link.count():  # ended (canceled, or done): then its results can be downloaded
        assert time.monotonic() < deadline, "the batch did not end within 90 s"
        time.sleep(1)
        page.goto("/console/batches")
    with page.expect_download() as download:
        page.locator(f"tr[data-batch='{batch.id}']").get_by_role("link", name="Results (JSONL)").click()
    assert Path(download.value.path()).read_text().count("custom_id") == 2
    shot(page, "batches")
    page.goto("/console/models")
    assert "smollm2-135m-instruct" in page.text_content("table") and "healthy" in page.content()
    shot(page, "models")


def test_disabling_the_admin_key_ends_its_sessions(page, server: Server) -> None:  # type: ignore[no-untyped-def]
    done = server.cli("keys", "create", "--admin", "--name", "short-lived admin")
    key_id = re.search(r"admin key (admkey_\S+)", done.stderr).group(1)  # type: ignore[union-attr]
    sign_in(page, done.stdout.strip().splitlines()[-1])
    page.goto("/console/keys")
    assert server.cli("keys", "disable", key_id).returncode == 0
    page.goto("/console/keys")
    page.wait_for_url(re.compile(r"/console/sign-in"))
    assert "session has ended" in page.text_content(".flash.bad")
