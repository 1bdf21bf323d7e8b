"""Database URLs and engines for the case store, shared by the store and the migrations.

Users write the URLs they know (``sqlite:///cases.db``, ``postgres://...``); the store is async,
so a URL without a driver is pointed at the async driver of its database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",  # the scheme Heroku-style providers hand out
}

# PostgreSQL pool of one worker process: every activity slot of the worker can hold a connection
# (the worker's max_concurrent_activities is POOL_SIZE + POOL_OVERFLOW, see worker.build_worker),
# so an activity never waits for one; N worker processes use at most N x 20 connections (3 x 20
# fits PostgreSQL's default max_connections of 100 with room for the CLI and migrations).
POOL_SIZE = 10
POOL_OVERFLOW = 10
ACTIVITY_SLOTS = POOL_SIZE + POOL_OVERFLOW

# How long a SQLite writer waits for another writer's lock before failing (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 10_000


def async_url(url: str | URL) -> URL:
    """``url`` with an async driver; an explicitly chosen driver is left as it is."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver) if driver else parsed


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def make_engine(url: str | URL, *, pooled: bool = True) -> AsyncEngine:
    """An engine for the case store. ``pooled=False`` is for one-shot work such as migrations,
    where a pool would only keep connections (and SQLite file handles) open afterwards."""
    parsed = async_url(url)
    options: dict[str, Any] = {}
    if not pooled:
        options["poolclass"] = NullPool
    elif parsed.get_backend_name() == "postgresql":
        # Sized for the worker's concurrent activities; pre-ping survives server restarts and
        # idle connections dropped by proxies between long quiet stretches.
        options.update(
            pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_pre_ping=True, pool_recycle=1800
        )

    if is_sqlite(parsed):
        path = _sqlite_file(parsed)
        if path is not None:
            # The default location (.data/) does not exist on a fresh checkout.
            path.parent.mkdir(parents=True, exist_ok=True)

    # A failing statement's error (logged, and kept in the activity's failure in the workflow's
    # history) names the statement, never its parameters: those are names, addresses, comments.
    engine = create_async_engine(parsed, hide_parameters=True, **options)
    if is_sqlite(parsed):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the CLI, tests) run beside the worker's writes; busy_timeout makes
    # concurrent activities queue for the write lock instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def sync_sqlite_engine(url: str | URL) -> Engine | None:
    """A synchronous engine on the same SQLite file (same pragmas), or None for any other
    database or an in-memory one: the store's hot path runs it in a worker thread."""
    parsed = make_url(url)
    if not is_sqlite(parsed) or _sqlite_file(parsed) is None:
        return None
    engine = create_engine(parsed.set(drivername="sqlite"), hide_parameters=True)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine
