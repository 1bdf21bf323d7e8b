"""Alembic environment for the case store (async engine, driven by ``activities.migrate``).

The URL comes from ``config.attributes["url"]`` when called from code, else from the
``sqlalchemy.url`` option, else from the project settings, so the plain ``alembic`` command
works too when pointed at this directory.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import URL, Connection

from activities.db import async_url, make_engine
from activities.store import metadata

# A fixed key for PostgreSQL's advisory lock: two workers starting together take turns instead
# of both trying to create the same tables.
_MIGRATION_LOCK = 7_201_355_014


def _url() -> URL:
    config = context.config
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from settings import get_settings  # only when run outside the project's own code

        url = get_settings().database_url
    return async_url(url)


def _configure(**options: object) -> None:
    # Batch mode lets later migrations alter SQLite tables (which lack most ALTER TABLE forms).
    context.configure(target_metadata=metadata, render_as_batch=True, **options)  # type: ignore[arg-type]


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        context.run_migrations()


async def run_online() -> None:
    url = _url()
    engine = make_engine(url, pooled=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    asyncio.run(run_online())
