"""The database: one SQLAlchemy engine and the tables, as the migrations leave them.

SQLite in the data directory by default; PostgreSQL (through psycopg) by URL when several front ends
share one store. The schema is owned by the Alembic migrations in `migrations/`; `connect` runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

metadata = sa.MetaData()
Money = sa.BigInteger  # amounts are integers of pico-USD (1e-12 USD): exact sums on every backend

organization = sa.Table(
    "organization",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("display_color", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("rate_limit_tier", sa.String(64), nullable=True),
    sa.Column("monthly_spend_limit", Money, nullable=True),
    sa.Column("credit_balance", Money, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("workspace_id", sa.String(64), nullable=False, default="default"),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_by", sa.String(64), nullable=True),
)

admin_keys = sa.Table(
    "admin_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("workspace_id", sa.String(64), nullable=True),  # None: the whole organisation
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("hint", sa.String(40), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
)

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the request id: one record per request
    sa.Column("ts", sa.BigInteger, nullable=False),  # start, epoch seconds (bucketing)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("instance_id", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("requested_model", sa.String(256), nullable=False),
    sa.Column("engine", sa.String(64), nullable=False, server_default="local"),  # the engine that served it
    sa.Column("service_tier", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stop_reason", sa.String(40), nullable=True),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_write_5m_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_write_1h_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_input", Money, nullable=False),
    sa.Column("cost_cache_write", Money, nullable=False),
    sa.Column("cost_cache_read", Money, nullable=False),
    sa.Column("cost_output", Money, nullable=False),
    sa.Column("cost", Money, nullable=False),
    sa.Column("latency_ms", sa.Integer, nullable=True),
    sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat", sa.BigInteger, nullable=False),  # epoch milliseconds
)


message_batches = sa.Table(
    "message_batches",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(40), nullable=False),  # the creator's key: its requests run as that key
    sa.Column("version", sa.String(16), nullable=False),  # the anthropic-version of the create call
    sa.Column("betas", sa.Text, nullable=False),  # its anthropic-beta names, comma-joined
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cancel_initiated_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),  # results purged
)

batch_requests = sa.Table(
    "batch_requests",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # also its request id and ledger record id
    sa.Column("batch_id", sa.String(40), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("custom_id", sa.String(64), nullable=False),
    sa.Column("params", sa.Text, nullable=True),  # the Messages request, JSON; None once purged
    sa.Column("status", sa.String(16), nullable=False),  # store/batches.py: QUEUED ... EXPIRED
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("not_before", sa.BigInteger, nullable=True),  # epoch ms: retried after a retryable refusal
    sa.Column("claimed_by", sa.String(40), nullable=True),  # the front end running it (instances.id)
    sa.Column("result", sa.Text, nullable=True),  # the result object, JSON (succeeded and errored)
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("batch_id", "custom_id", name="uq_batch_requests_custom_id"),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("workspace_id", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(40), nullable=False),  # the uploader's key
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("mime_type", sa.String(255), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),  # None: kept until deleted
)


def connect(url: str | Path, *, migrate: bool = True, **engine_args: Any) -> sa.Engine:
    """An engine for `url` (a SQLAlchemy URL, or a path to a SQLite file), migrated to the current schema."""
    if isinstance(url, Path):
        url = f"sqlite:///{url}"
    parsed = make_url(url)
    engine_args.setdefault("hide_parameters", True)  # no bound values (key hashes, names) in errors or logs
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30}, **engine_args)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # an unreachable server fails a request in seconds (gateway/outages.py), instead of hanging it
        connect_args = {"connect_timeout": 3}
        engine = sa.create_engine(parsed, pool_pre_ping=True, pool_timeout=5, connect_args=connect_args, **engine_args)
    if migrate:
        from missive.store.migrate import upgrade

        upgrade(engine)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # with WAL: survives a process crash, not a power cut
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
