"""Load time of each console page with a month of usage: seeds ledger records (default 100,000) over the
last 30 days, across workspaces, keys and models (one of them priced, so cost charts have data), through
the store's ledger functions, then starts a real server on that store and times each page (median of
several loads, server-side, as a browser's document request sees it).

    .venv/bin/python bench/console_pages.py [--records 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from missive.gateway.pricing import Pricing, Tokens
from missive.settings import PricingSettings
from missive.store import db as store_db
from missive.store import ledger
from missive.store.keys import create_admin_key, create_key
from missive.store.workspaces import create_workspace
from missive.wire.ids import new_id

PAGES = [
    "usage?range=24h",
    "usage?range=7d",
    "usage?range=31d",
    "usage?range=31d&group=api_key_id",
    "usage?range=31d&group=workspace_id",
    "usage.csv?range=31d",
    "keys",
    "workspaces",
    "workbench",
    "limits",
    "batches",
    "models",
]
MODELS = ["smollm2-135m-instruct", "claude-sonnet-4-6", "claude-haiku-4-5"]
CONFIG = 'default_model = "smollm2-135m-instruct"\n[local]\nparallel = 1\n'


def seed(db_path: Path, records: int) -> str:
    """Workspaces, keys and `records` settled ledger rows; returns an organisation admin key."""
    database = store_db.connect(db_path)
    spaces = ["default"] + [create_workspace(database, f"Team {n}").id for n in range(4)]
    keys = [create_key(database, f"key {n}", spaces[n % len(spaces)])[0] for n in range(20)]
    _, admin = create_admin_key(database, "bench")
    pricing = Pricing(PricingSettings())
    rng = random.Random(7)
    now = int(time.time())
    created = datetime.now(UTC)
    for start in range(0, records, 5000):
        with database.begin() as conn:
            for _ in range(min(5000, records - start)):
                key = rng.choice(keys)
                model = rng.choice(MODELS)
                record = ledger.Record(
                    new_id("req_"),
                    now - rng.randrange(30 * 86400),
                    "bench",
                    key.id,
                    key.workspace_id,
                    model,
                    model,
                    "standard",
                )
                tokens = Tokens(
                    input=rng.randrange(20, 3000),
                    cache_write_5m=rng.choice([0, 0, 1200]),
                    cache_read=rng.choice([0, 0, 0, 2400]),
                    output=rng.randrange(1, 800),
                )
                ledger.open_record(conn, record, created)
                settled = ledger.Settlement(
                    "succeeded",
                    {
                        "input_tokens": tokens.input,
                        "cache_write_5m_tokens": tokens.cache_write_5m,
                        "cache_write_1h_tokens": 0,
                        "cache_read_tokens": tokens.cache_read,
                        "output_tokens": tokens.output,
                    },
                    pricing.cost(model, tokens).columns(),
                    "end_turn",
                    100,
                )
                ledger.settle(conn, record.id, settled, (ledger.IN_FLIGHT,))
    database.dispose()
    return admin


def screenshots(base: str, session: str, folder: Path) -> None:
    """The seeded usage pages as a browser shows them (Debian's chromium, through Playwright)."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        context.add_cookies([{"name": "missive_console", "value": session, "url": base + "/console"}])
        page = context.new_page()
        for name, path in [
            ("usage-month", "usage?range=31d"),
            ("usage-month-by-key", "usage?range=31d&group=api_key_id"),
            ("usage-week", "usage?range=7d&group=workspace_id"),
            ("keys-seeded", "keys"),
        ]:
            page.goto(f"{base}/console/{path}")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
        browser.close()
    print(f"screenshots in {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--screenshots", type=Path, help="Also save screenshots of the seeded pages here (Chromium)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root_name:
        root = Path(root_name)
        (root / "data").mkdir()
        started = time.perf_counter()
        admin = seed(root / "data" / "missive.db", args.records)
        print(f"seeded {args.records:,} ledger records in {time.perf_counter() - started:.1f} s", flush=True)
        (root / "missive.toml").write_text(CONFIG)
        env = {
            **os.environ,
            "MISSIVE_DATA_DIR": str(root / "data"),
            "MISSIVE_CONFIG": str(root / "missive.toml"),
        }
        log = (root / "server.log").open("w")
        port = 18000 + random.randrange(2000)
        server = subprocess.Popen(
            [sys.executable, "-m", "missive", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 180
            while "Application startup complete" not in (root / "server.log").read_text():
                assert server.poll() is None and time.monotonic() < deadline, (
                    root / "server.log"
                ).read_text()
                time.sleep(0.2)
            with httpx.Client(base_url=base, timeout=120) as http:
                form = http.get("/console/sign-in").text
                csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
                signed = http.post("/console/sign-in", data={"key": admin, "csrf": csrf})
                assert signed.status_code == 303, signed.text
                print(f"{'page':<40} {'median ms':>10} {'max ms':>8}")
                for page in PAGES:
                    times = []
                    for _ in range(args.rounds):
                        begun = time.perf_counter()
                        answer = http.get(f"/console/{page}")
                        times.append((time.perf_counter() - begun) * 1000)
                        assert answer.status_code == 200, (page, answer.status_code)
                    print(
                        f"/console/{page:<31} {statistics.median(times):>10.0f} {max(times):>8.0f}",
                        flush=True,
                    )
            if args.screenshots:
                screenshots(base, http.cookies["missive_console"], args.screenshots)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
