"""The store on both databases (SQLite and PostgreSQL): migrations, keys, workspaces, the ledger, reports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from platform_backends import database

from missive.gateway.ledger import Ledger
from missive.gateway.pricing import Pricing, Tokens
from missive.settings import LedgerSettings, PricingSettings
from missive.store import keys as key_store
from missive.store import ledger as ledger_store
from missive.store import reports as report_store
from missive.store import workspaces as workspace_store
from missive.store.db import connect
from missive.wire.money import usd_to_pico

LEGACY_API_KEYS = (
    "CREATE TABLE api_keys (id VARCHAR(40) PRIMARY KEY, name VARCHAR(256) NOT NULL, workspace_id VARCHAR(64) "
    "NOT NULL, key_hash VARCHAR(64) NOT NULL UNIQUE, hint VARCHAR(32) NOT NULL, created_at TIMESTAMP NOT NULL, "
    "disabled_at TIMESTAMP)"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, str(tmp_path)) as database_url:
        yield database_url


@pytest.fixture
def db(url: str) -> Iterator[sa.Engine]:
    engine = connect(url)
    yield engine
    engine.dispose()


def test_migrations_run_once_and_adopt_a_database_from_before_them(url: str) -> None:
    legacy = sa.create_engine(url)
    with legacy.begin() as conn:
        conn.execute(sa.text(LEGACY_API_KEYS))
        conn.execute(
            sa.text(
                "INSERT INTO api_keys VALUES ('apikey_old', 'old', 'default', 'h', 'sk-…', "
                "'2026-01-01 00:00:00', NULL)"
            )
        )
    legacy.dispose()
    for _ in range(2):  # the second start finds the schema current
        engine = connect(url)
        tables = set(sa.inspect(engine).get_table_names())
        assert {
            "api_keys",
            "workspaces",
            "admin_keys",
            "usage_records",
            "instances",
            "files",
            "alembic_version",
        } <= tables
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0007"
        old = key_store.get_key(engine, "apikey_old")
        assert old is not None and old.status == "active" and old.workspace_id == "default"
        engine.dispose()


def test_key_lifecycle_and_the_two_kinds_of_keys(db: sa.Engine) -> None:
    team = workspace_store.create_workspace(db, "team")
    key, secret = key_store.create_key(db, "ci", team.id)
    assert key_store.find_active_key(db, secret) == key
    assert key_store.find_caller(db, secret) == (key, team)  # what each request reads: key and workspace
    assert key.hint.startswith("sk-missive-") and secret.endswith(key.hint[-4:]) and secret not in key.hint
    with db.connect() as conn:
        stored = " ".join(
            str(value) for row in conn.execute(sa.text("SELECT * FROM api_keys")) for value in row
        )
    assert secret not in stored
    key_store.update_key(db, key.id, status="inactive")
    assert key_store.find_active_key(db, secret) is None
    assert key_store.update_key(db, key.id, status="active", name="ci-2").name == "ci-2"
    assert key_store.find_active_key(db, secret) is not None
    _, expired = key_store.create_key(db, "old", team.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert key_store.find_active_key(db, expired) is None
    admin, admin_secret = key_store.create_admin_key(db, "root")
    assert (
        key_store.find_admin_key(db, admin_secret) == admin
        and key_store.find_active_key(db, admin_secret) is None
    )
    assert key_store.find_admin_key(db, secret) is None
    workspace_store.archive_workspace(db, team.id)
    assert key_store.get_key(db, key.id).status == "archived"  # type: ignore[union-attr]
    assert key_store.find_active_key(db, secret) is None and key_store.find_caller(db, secret) is None
    with pytest.raises(key_store.KeyStateError):
        key_store.update_key(db, key.id, status="active")
    with pytest.raises(key_store.KeyStateError):
        key_store.create_key(db, "late", team.id)
    with pytest.raises(workspace_store.WorkspaceError):
        workspace_store.archive_workspace(db, "default")


def _record(
    record_id: str, workspace_id: str, instance: str = "inst_a", **tokens: int
) -> ledger_store.Record:
    return ledger_store.Record(
        id=record_id,
        ts=int(time.time()),
        instance_id=instance,
        key_id="apikey_x",
        workspace_id=workspace_id,
        model="claude-haiku-4-5",
        requested_model="claude-haiku-4-5",
        service_tier="standard",
        **tokens,
    )


def test_settling_is_exactly_once_and_moves_the_credit_by_the_difference(db: sa.Engine) -> None:
    team = workspace_store.create_workspace(db, "prepaid", credit_balance=usd_to_pico(1))
    pricing = Pricing(PricingSettings())
    ledger = Ledger(db, LedgerSettings(checkpoint_interval=0.1, dead_after=0.2), pricing)
    record = _record("req_1", team.id, input_tokens=1000)

    async def run() -> None:
        await ledger.open(record)
        record.output_tokens = 2000
        cost = await ledger.settle(record, "succeeded", "end_turn", 12)
        assert cost.total == usd_to_pico("0.011")  # haiku: 1000 x $1 + 2000 x $5 per million
        with db.begin() as conn:  # a second settlement of a settled row changes nothing
            assert not ledger_store.settle(
                conn,
                "req_1",
                ledger_store.Settlement("interrupted", {}, {"cost": 0}),
                (ledger_store.IN_FLIGHT,),
            )
        # the front end settles again after a recovery marked the row interrupted: one row, corrected cost
        with db.begin() as conn:
            conn.execute(sa.text("UPDATE usage_records SET status = 'interrupted' WHERE id = 'req_1'"))
        record.output_tokens = 4000
        await ledger.settle(record, "succeeded", "end_turn", 12)

        await ledger.close()

    asyncio.run(run())
    row = ledger_store.get_record(db, "req_1")
    assert row is not None and row["status"] == "succeeded" and row["cost"] == usd_to_pico("0.021")
    assert workspace_store.get_workspace(db, team.id).credit_balance == usd_to_pico("0.979")  # type: ignore[union-attr]
    assert ledger_store.spend_since(db, team.id, 0) == usd_to_pico("0.021")


def test_records_of_a_dead_front_end_are_recovered_once_with_their_checkpoint(db: sa.Engine) -> None:
    team = workspace_store.create_workspace(db, "t")
    pricing = Pricing(PricingSettings())
    dying = Ledger(db, LedgerSettings(checkpoint_interval=0.1, dead_after=0.3), pricing)
    survivor = Ledger(db, LedgerSettings(checkpoint_interval=0.1, dead_after=0.3), pricing)
    record = _record("req_2", team.id, input_tokens=100)

    async def run() -> None:
        await dying.tick()
        await survivor.tick()
        await dying.open(record)
        dying.progress("req_2", 37)
        await dying.tick()  # checkpoint: 37 output tokens saved
        assert await survivor.recover() == 0  # the other front end is alive
        await asyncio.sleep(0.4)  # ... and then it is not
        await survivor.tick()
        assert await survivor.recover() == 0  # already settled by the tick
        await survivor.close()
        dying.writer.close()

    asyncio.run(run())
    row = ledger_store.get_record(db, "req_2")
    assert row is not None and row["status"] == "interrupted" and row["output_tokens"] == 37
    assert row["cost"] == pricing.cost("claude-haiku-4-5", Tokens(input=100, output=37)).total


def test_report_sums_per_bucket_and_group(db: sa.Engine) -> None:
    base = 1_800_000_000 // 3600 * 3600
    for index, (offset, workspace, model) in enumerate(
        [(10, "a", "m1"), (20, "a", "m2"), (3700, "a", "m1"), (3800, "b", "m1"), (7300, "b", "m2")]
    ):
        record = _record(f"req_{index}", workspace, input_tokens=10 * (index + 1), output_tokens=index)
        record.ts, record.model = base + offset, model
        with db.begin() as conn:
            ledger_store.open_record(conn, record, datetime.now(UTC))
    rows = report_store.summed(db, base, base + 3 * 3600, 3600, ["workspace_id"], {})
    assert [(r["bucket"], r["workspace_id"], r["input_tokens"], r["requests"]) for r in rows] == [
        (0, "a", 30, 2),
        (1, "a", 30, 1),
        (1, "b", 40, 1),
        (2, "b", 50, 1),
    ]
    only = report_store.summed(
        db, base, base + 3 * 3600, 86400, ["model"], {"workspace_id": ["b"], "model": ["m1"]}
    )
    assert [(r["bucket"], r["model"], r["input_tokens"], r["output_tokens"]) for r in only] == [
        (0, "m1", 40, 3)
    ]


def test_reports_read_only_what_they_sum_and_use_the_report_indexes(db: sa.Engine) -> None:
    day = 1_800_000_000 // 86400 * 86400
    for index, (offset, workspace, key) in enumerate(
        [(10, "a", "k1"), (4000, "a", "k2"), (90000, "b", "k1"), (90500, "b", "k3"), (200000, "a", "k2")]
    ):
        record = _record(f"req_r{index}", workspace, input_tokens=index + 1, output_tokens=2 * index)
        record.ts, record.key_id = day + offset, key
        with db.begin() as conn:
            ledger_store.open_record(conn, record, datetime.now(UTC))
    for start, width in [(day, 86400), (day, 3600), (day + 3000, 3600), (day + 7, 60)]:  # aligned or not
        full = report_store.summed(db, start, day + 3 * 86400, width, ["api_key_id"], {})
        some = report_store.summed(db, start, day + 3 * 86400, width, ["api_key_id"], {}, ["output_tokens"])
        assert [{"bucket": r["bucket"], "api_key_id": r["api_key_id"], "output_tokens": r["output_tokens"],
                 "requests": r["requests"]} for r in full] == some  # fmt: skip
        assert [r["bucket"] for r in full] == [(day + t - start) // width for t in (10, 4000, 90000, 90500, 200000)
                                               if day + t >= start]  # fmt: skip
    assert report_store.last_used(db, day + 60) == {"k1": day + 90000, "k2": day + 200000, "k3": day + 90500}
    assert report_store.last_used(db, day, "a") == {"k1": day + 10, "k2": day + 200000}
    assert report_store.last_used(db, day + 300000) == {}
    with db.connect() as conn:
        if db.dialect.name == "sqlite":  # the report scans the covering index alone, never the table
            query = "SELECT ts / 86400, model, sum(cost) FROM usage_records WHERE ts >= 0 GROUP BY 1, 2"
            plan = " ".join(row[3] for row in conn.execute(sa.text("EXPLAIN QUERY PLAN " + query)))
            assert "COVERING INDEX ix_usage_report" in plan, plan
        elif conn.dialect.server_version_info >= (14,):  # the bucket statistics PostgreSQL estimates from
            mine = "SELECT stxname FROM pg_statistic_ext WHERE stxnamespace = current_schema()::regnamespace"
            names = conn.execute(sa.text(mine)).scalars().all()
            assert {"st_usage_minute", "st_usage_hour", "st_usage_day"} <= set(names)


def test_the_writer_commits_groups_and_one_bad_write_fails_alone(db: sa.Engine) -> None:
    from missive.store.writer import Writer

    writer = Writer(db)
    team = workspace_store.create_workspace(db, "w")

    async def run() -> list[object]:
        def good(index: int):  # type: ignore[no-untyped-def]
            return lambda conn: ledger_store.open_record(
                conn, _record(f"req_w{index}", team.id), datetime.now(UTC)
            )

        def bad(conn: sa.Connection) -> None:
            ledger_store.open_record(conn, _record("req_w0", team.id), datetime.now(UTC))  # a duplicate id

        writes = [writer.write(good(index)) for index in range(20)] + [writer.write(bad)]
        return await asyncio.gather(*writes, return_exceptions=True)

    results = asyncio.run(run())
    writer.close()
    assert results[:20] == [None] * 20 and isinstance(results[20], sa.exc.IntegrityError)
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM usage_records")).scalar_one() == 20


def test_a_settlement_the_database_refuses_is_retried(db: sa.Engine) -> None:
    team = workspace_store.create_workspace(db, "r")
    ledger = Ledger(db, LedgerSettings(), Pricing(PricingSettings()))
    record = _record("req_retry", team.id, input_tokens=10)

    async def run() -> None:
        await ledger.open(record)
        real_write = ledger._write_settlement
        failing = True

        async def flaky(record_id: str, settlement: ledger_store.Settlement) -> None:
            if failing:
                raise sa.exc.OperationalError("UPDATE", {}, Exception("database is away"))
            await real_write(record_id, settlement)

        ledger._write_settlement = flaky  # type: ignore[method-assign]
        record.output_tokens = 3
        await ledger.settle(record, "succeeded", "end_turn", 5)
        assert ledger_store.get_record(db, "req_retry")["status"] == "in_flight"  # type: ignore[index]
        failing = False
        await ledger.tick()
        await ledger.close()

    asyncio.run(run())
    row = ledger_store.get_record(db, "req_retry")
    assert row is not None and row["status"] == "succeeded" and row["output_tokens"] == 3
