"""Runs the Alembic migrations in `migrations/` up to the newest, at server start and CLI use.

Several front ends may start together on one PostgreSQL database: an advisory lock lets one migrate
while the others wait. A database made before migrations existed (tables created directly, no
`alembic_version`) is stamped at the first revision, which is exactly that schema, then upgraded.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

FIRST_REVISION = "0001"
_LOCK_ID = 0x6D697373  # "miss"


def _config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", "missive.store:migrations")
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": _LOCK_ID})
            connection.commit()
        try:
            config = _config(connection)
            head = ScriptDirectory.from_config(config).get_current_head()
            current = MigrationContext.configure(connection).get_current_revision()
            if current == head:
                return
            if current is None and sa.inspect(connection).has_table("api_keys"):
                command.stamp(config, FIRST_REVISION)
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if postgres:
                connection.rollback()
                connection.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": _LOCK_ID})
                connection.commit()
