"""``report`` on a big store: 100,000 cases and 1,000,000 history rows, bulk-loaded into SQLite
and PostgreSQL, answer within seconds with the indexes of migration 0003."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from activities import upgrade
from activities.db import make_engine
from starter.report import build_report
from tests.report_data import Columns, bulk_load_text, generate_many

CASES, ROWS_PER_CASE = 100_000, 10
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
# The default report (the last 30 days). Wall-clock time on the shared 2-CPU build machine swings
# with the other suites' load (4 to 14 s measured on SQLite at load averages of 12 to 20), so
# the wall bound only catches a lost index; SQLite's in-process CPU time is the steady figure.
WITHIN_SECONDS = 30.0
SQLITE_CPU_SECONDS = 6.0


@pytest.fixture(scope="module")
def big() -> Columns:
    return generate_many(CASES, ROWS_PER_CASE, NOW)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    """The backend's name and a coroutine function giving a new, empty database."""
    if request.param == "sqlite":

        async def fresh_sqlite() -> str:
            return f"sqlite:///{tmp_path / 'big.db'}"

        return "sqlite", fresh_sqlite
    return "postgresql", request.getfixturevalue("postgres_databases").create


async def test_the_report_of_a_big_store_answers_within_seconds(
    backend: tuple[str, Any], big: Columns
) -> None:
    name, fresh = backend
    url = await fresh()
    await upgrade(url)
    await bulk_load_text(url, big)

    engine = make_engine(url, pooled=False)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        report = await build_report(engine, since=NOW - timedelta(days=30), until=NOW, now=NOW)
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await engine.dispose()

    print(
        f"\nreport of {CASES:,} cases, {CASES * ROWS_PER_CASE:,} history rows on {name}: "
        f"{took:.2f} s (this process's CPU: {cpu:.2f} s)"
    )
    assert took < WITHIN_SECONDS, f"{name}: {took:.2f} s"
    if name == "sqlite":  # the database works in this process (aiosqlite's thread)
        assert cpu < SQLITE_CPU_SECONDS, f"sqlite: {cpu:.2f} s of CPU"
    # The figures are the store's: every case counted once, open or closed.
    closed = sum(1 for row in big.cases if row[6] == "Closed")
    assert report.open_total == CASES - closed
    assert sum(r.stays for r in report.stays) > 0
    assert report.backlog[-1].open == report.open_total
