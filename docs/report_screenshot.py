"""Take the README's screenshot of ``python -m starter report --html`` with headless Chromium.

``python docs/report_screenshot.py`` builds a throwaway SQLite case store of 3,000 synthetic
cases (tests/report_data.py: seeded walks through the lifecycle over the last 180 days), writes
the report of the last 90 days as an HTML page and takes its screenshot ``docs/report.png``
(the system's ``chromium``, Debian package; nothing is downloaded).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from activities import upgrade  # noqa: E402
from activities.db import make_engine  # noqa: E402
from starter.report import build_report  # noqa: E402
from starter.report_html import render  # noqa: E402
from tests.report_data import bulk_load, generate  # noqa: E402

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
WIDTH, HEIGHT = 1280, 2560


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'cases.db'}"
        await upgrade(url)
        await bulk_load(url, generate(3_000, NOW, days=180, seed=7))
        engine = make_engine(url, pooled=False)
        try:
            report = await build_report(engine, since=NOW - timedelta(days=90), until=NOW, now=NOW)
        finally:
            await engine.dispose()
        report.store = "sqlite:///.data/cases.db"  # not the throwaway path
        page = Path(folder) / "report.html"
        page.write_text(render(report), encoding="utf-8")
        await _screenshot(page)
    print("wrote docs/report.png")


async def _screenshot(page: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("the Debian package chromium is missing: apt-get install chromium")
    await asyncio.to_thread(
        subprocess.run,
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WIDTH},{HEIGHT}",
            f"--screenshot={ROOT / 'docs' / 'report.png'}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


if __name__ == "__main__":
    asyncio.run(main())
