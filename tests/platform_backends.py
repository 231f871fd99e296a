"""The platform's backends for tests: SQLite or PostgreSQL, in-process or Redis rate limits.

PostgreSQL (127.0.0.1:5432, trust auth, database `test`) and Redis (127.0.0.1:6379) run on the
development and CI machines; `MISSIVE_TEST_POSTGRES` / `MISSIVE_TEST_REDIS` point elsewhere. Each
test gets its own PostgreSQL schema and Redis key prefix, and both are removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

POSTGRES_URL = os.environ.get("MISSIVE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MISSIVE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _postgres_ok() -> bool:
    try:
        engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def _redis_ok() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping())
    except Exception:
        return False


POSTGRES = _postgres_ok()
REDIS = _redis_ok()


def require_postgres() -> None:
    if not POSTGRES:
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL} (set MISSIVE_TEST_POSTGRES)")


def require_redis() -> None:
    if not REDIS:
        pytest.skip(f"no Redis at {REDIS_URL} (set MISSIVE_TEST_REDIS)")


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema; yields a URL whose connections use it. Dropped with everything in it afterwards."""
    require_postgres()
    schema = "missive_test_" + secrets.token_hex(6)
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted afterwards."""
    require_redis()
    import redis

    prefix = f"missive-test:{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


@contextlib.contextmanager
def database(kind: str, tmp_dir: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_dir}/missive.db"
    else:
        with postgres_schema() as url:
            yield url
