"""The console's parts that need no browser: the setting that turns it off, the sign-in redirect guard,
money as people write it, and the usage page's query."""

from __future__ import annotations

import pytest
from starlette.routing import Mount

from missive.console import usage, views, web
from missive.server import create_app
from missive.settings import Settings


def _paths(enabled: bool) -> set[str]:
    settings = Settings(claude_aliases=False, console={"enabled": enabled})  # type: ignore[arg-type]
    app = create_app(settings, engines=[])
    return {route.path for route in app.routes if isinstance(route, Mount) or hasattr(route, "path")}


def test_the_console_is_on_by_default_and_a_setting_turns_it_off() -> None:
    assert Settings().console.enabled
    assert "/console" in _paths(True)
    assert not any(path.startswith("/console") for path in _paths(False))


def test_sign_in_sends_back_only_to_console_pages() -> None:
    class Fake:
        query_params: dict[str, str] = {}

    assert views._next(Fake(), {"next": "/console/keys"}) == "/console/keys"  # type: ignore[arg-type]
    for target in ("https://evil.example/", "//evil.example/console/", "/v1/messages", ""):
        assert views._next(Fake(), {"next": target}) == "/console/usage"  # type: ignore[arg-type]


def test_money_is_shown_in_cents_and_more_digits_only_when_needed() -> None:
    assert web.usd("25.000000") == "25.00"
    assert web.usd("0.001500") == "0.0015"
    assert web.usd(None) == ""


def test_unknown_usage_queries_fall_back_to_the_defaults() -> None:
    assert usage.Query.read({"range": "1y", "group": "secret"}) == usage.Query("7d", "model")
    assert usage.Query.read({"range": "31d", "group": "api_key_id"}) == usage.Query("31d", "api_key_id")


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_without_its_npm_assets_the_console_still_serves(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    settings = Settings(  # type: ignore[arg-type]
        claude_aliases=False, data_dir=tmp_path, console={"assets_dir": str(tmp_path / "none")}
    )
    app = create_app(settings, engines=[])
    console = next(route for route in app.routes if isinstance(route, Mount) and route.path == "/console")
    assert "/vendor" not in {route.path for route in console.routes}  # type: ignore[attr-defined]
    http = TestClient(app, raise_server_exceptions=False)  # no lifespan: these pages need no store
    assert http.get("/console/vendor/chart.js/dist/chart.umd.min.js").status_code == 404
    assert http.get("/console/sign-in").status_code == 200
    assert http.get("/console/static/console.css").status_code == 200
