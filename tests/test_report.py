"""``python -m starter report`` and ``history`` against a hand-built store whose every figure is
known (SQLite and PostgreSQL); the HTML page rendered by headless Chromium."""

from __future__ import annotations

import csv
import io
import json
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from activities import upgrade
from activities.db import make_engine
from activities.store import case_history, cases, outbox, policy_changes
from starter.cli import app
from starter.report import Report, build_report, earliest_start
from tests import readme
from workflows.calendar import Span

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
SINCE = NOW - timedelta(days=30)
D, H = timedelta(days=1), timedelta(hours=1)


def _case(
    number: str,
    status: str,
    *,
    opened: timedelta,
    since: timedelta,
    tier: int = 1,
    institution: str = "Alma University",
    closed: timedelta | None = None,
) -> dict[str, Any]:
    return {
        "case_number": number,
        "institution": institution,
        "product": "Alma",
        "priority": "normal",
        "title": "Loans report shows wrong totals",
        "contact_email": "ann@alma.example",
        "status": status,
        "status_since": NOW - since,
        "owner_tier": tier,
        "release_id": None,
        "opened_at": NOW - opened,
        "closed_at": None if closed is None else NOW - closed,
        "case_references": None,
        "seq": 1,
        "updated_at": NOW,
    }


# Six open cases, two closed in the period (one by the timer, one by the customer).
CASES = [
    _case("A1", "New", opened=2 * H, since=2 * H),
    _case("A2", "Tier 1 Analysis", opened=3 * D, since=30 * H),
    # Reminder due in 4 days (14d), closing in 18 days (28d).
    _case("A3", "Pending Customer Response", opened=20 * D, since=10 * D, institution="Beta"),
    # Closed in 4 days (14d).
    _case("A4", "Closing", opened=40 * D, since=10 * D, tier=2, institution="Beta"),
    # Entered 2026-09-11 12:00: the first reassessment (3mo) is due 2026-12-11, in 11 days.
    _case("A5", "Pending Work Plan", opened=100 * D, since=80 * D, tier=2, institution="Gamma"),
    # Entered 2026-01-04 12:00: closed after 11mo on 2026-12-04, in 4 days.
    _case("A6", "Pending Customer Testing", opened=335 * D, since=330 * D),
    _case("C1", "Closed", opened=25 * D, since=5 * D, closed=5 * D),
    _case("C2", "Closed", opened=15 * D, since=3 * D, closed=3 * D),
]


def _walk(number: str, *steps: tuple[str, timedelta, str]) -> list[dict[str, Any]]:
    rows, source = [], None
    for seq, (target, ago, role) in enumerate(steps, start=1):
        rows.append(
            {
                "case_number": number,
                "seq": seq,
                "from_status": source,
                "to_status": target,
                "at": NOW - ago,
                "actor_role": role,
                "actor_name": f"{role} person",
                "actor_institution": None,
                "note": f"{number} #{seq}",
            }
        )
        source = target
    return rows


HISTORY = [
    # New 1d, Tier 1 Analysis 5d, Closing 14d, closed by the timer.
    *_walk(
        "C1",
        ("New", 25 * D, "tier1"),
        ("Tier 1 Analysis", 24 * D, "tier1"),
        ("Closing", 19 * D, "tier1"),
        ("Closed", 5 * D, "system"),
    ),
    # New 1d, Tier 1 Analysis 2d, Closing 2d, reopened: Waiting for Process 1d, Tier 1 Analysis
    # 1d, Closing 5d, closed by the customer.
    *_walk(
        "C2",
        ("New", 15 * D, "customer"),
        ("Tier 1 Analysis", 14 * D, "tier1"),
        ("Closing", 12 * D, "tier1"),
        ("Waiting for Process", 10 * D, "customer"),
        ("Tier 1 Analysis", 9 * D, "tier1"),
        ("Closing", 8 * D, "tier1"),
        ("Closed", 3 * D, "customer"),
    ),
    # New for 42 h.
    *_walk("A2", ("New", 3 * D, "customer"), ("Tier 1 Analysis", 30 * H, "tier1")),
    # Both stays ended before the period.
    *_walk(
        "A5",
        ("New", 100 * D, "tier1"),
        ("Tier 1 Analysis", 99 * D, "tier1"),
        ("Pending Work Plan", 80 * D, "tier2"),
    ),
]


def _mail(
    key: str, number: str, created: timedelta, sent: bool, error: str | None = None
) -> dict[str, Any]:
    return {
        "key": key,
        "case_number": number,
        "template": "closing",
        "recipient": "ann@alma.example",
        "subject": f"Case {number}",
        "body": "…",
        "message_id": f"<{key}@example.org>",
        "created_at": NOW - created,
        "sent_at": NOW - created + H if sent else None,
        "attempts": 1,
        "last_error": error,
        "resent_in_doubt": 0,
    }


OUTBOX = [
    _mail("m1", "C2", 12 * D, sent=True),
    _mail("m2", "C2", 3 * D, sent=True),
    _mail("m3", "A4", 10 * D, sent=False, error="452 4.2.2 Mailbox full"),
    _mail("m0", "A5", 80 * D, sent=True),  # before the period
]


POLICY_CHANGES = [
    {
        "case_number": "C1",
        "seq": 3,
        "at": NOW - 20 * D,
        "actor_role": "tier1",
        "actor_name": "tier1 person",
        "actor_institution": None,
        "reason": "a faster reminder",
        "changes": json.dumps([{"field": "pcr_reminder", "old": "14d", "new": "3d"}]),
    }
]


async def _build(url: str) -> None:
    await upgrade(url)
    engine = make_engine(url, pooled=False)
    try:
        async with engine.begin() as conn:
            await conn.execute(cases.insert(), CASES)
            await conn.execute(case_history.insert(), HISTORY)
            await conn.execute(outbox.insert(), OUTBOX)
            await conn.execute(policy_changes.insert(), POLICY_CHANGES)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fresh_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], Awaitable[str]]:
    """A coroutine function giving the URL of a new hand-built store of the backend."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("report")
        counter = iter(range(100))

        async def sqlite_store() -> str:
            url = f"sqlite:///{folder / f'cases{next(counter)}.db'}"
            await _build(url)
            return url

        return sqlite_store
    databases = request.getfixturevalue("postgres_databases")

    async def postgres_store() -> str:
        url = await databases.create()
        await _build(url)
        return url

    return postgres_store


@pytest.fixture(scope="module")
async def store_url(fresh_store: Callable[[], Awaitable[str]]) -> str:
    return await fresh_store()


@pytest.fixture(scope="module")
async def report(store_url: str) -> AsyncIterator[Report]:
    engine = make_engine(store_url, pooled=False)
    try:
        yield await build_report(engine, since=SINCE, until=NOW, now=NOW, top=2)
    finally:
        await engine.dispose()


def _counts(items: Any) -> dict[str, int]:
    return {c.key: c.count for c in items}


# ---- the figures -------------------------------------------------------------------------------


def test_open_cases_by_status_tier_and_institution(report: Report) -> None:
    assert report.open_total == 6
    assert _counts(report.by_status) == {
        "New": 1,
        "Tier 1 Analysis": 1,
        "Pending Customer Response": 1,
        "Pending Work Plan": 1,
        "Pending Customer Testing": 1,
        "Closing": 1,
    }
    assert [c.key for c in report.by_status][:3] == [
        "New",
        "Tier 1 Analysis",
        "Pending Customer Response",
    ]
    assert _counts(report.by_owner_tier) == {"Tier 1": 4, "Tier 2": 2}
    # Top 2: Alma (A1, A2, A6; C1 is closed), Beta (A3, A4); Gamma is "all others".
    assert _counts(report.by_institution) == {"Alma University": 3, "Beta": 2}
    assert report.institutions_other == 1


def test_age_and_time_in_the_current_status(report: Report) -> None:
    ages = {row.status: row for row in report.age}

    def bucket(values: dict[str, int]) -> str:
        (name,) = [k for k, v in values.items() if v]
        return name

    assert {s: bucket(r.age) for s, r in ages.items()} == {
        "New": "< 1 d",
        "Tier 1 Analysis": "1-7 d",
        "Pending Customer Response": "7-30 d",
        "Closing": "30-90 d",
        "Pending Work Plan": "> 90 d",
        "Pending Customer Testing": "> 90 d",
    }
    assert {s: bucket(r.in_status) for s, r in ages.items()} == {
        "New": "< 1 d",
        "Tier 1 Analysis": "1-7 d",  # 30 hours
        "Pending Customer Response": "7-30 d",
        "Closing": "7-30 d",
        "Pending Work Plan": "30-90 d",
        "Pending Customer Testing": "> 90 d",
    }


def test_deadlines_in_the_next_7_and_30_days_by_kind(report: Report) -> None:
    within = {row.kind: row.within for row in report.deadlines}
    assert within == {
        "pcr_reminder": {7: 1, 30: 1},
        "pcr_closing": {7: 0, 30: 1},
        "closing_closed": {7: 1, 30: 1},
        "work_plan_review": {7: 0, 30: 1},
        "work_plan_expiry": {7: 0, 30: 0},
        "release_closing": {7: None, 30: None},  # the store lacks the release's ship date
        "testing_closed": {7: 1, 30: 1},
    }
    assert "default deadline policy" in report.deadline_note


def test_median_and_p90_time_in_each_status(report: Report) -> None:
    stays = {row.status: (row.stays, row.median_s / 3600, row.p90_s / 3600) for row in report.stays}
    # Nearest rank: New [24 h, 24 h, 42 h]; Tier 1 Analysis [1, 2, 5] d; Closing [2, 5, 14] d.
    assert stays == {
        "New": (3, 24.0, 42.0),
        "Tier 1 Analysis": (3, 48.0, 120.0),
        "Waiting for Process": (1, 24.0, 24.0),
        "Closing": (3, 120.0, 336.0),
    }
    assert [row.status for row in report.stays] == [
        "New",
        "Tier 1 Analysis",
        "Waiting for Process",
        "Closing",
    ]


async def test_a_whole_history_period_gives_the_same_stays(store_url: str) -> None:
    """A period covering most rows takes the one-pass (window) query: same answers."""
    engine = make_engine(store_url, pooled=False)
    try:
        whole = await build_report(engine, since=NOW - 400 * D, until=NOW, now=NOW)
    finally:
        await engine.dispose()
    stays = {row.status: (row.stays, row.median_s / 3600, row.p90_s / 3600) for row in whole.stays}
    assert stays["Closing"] == (3, 120.0, 336.0)
    # The two stays of A5 that ended 99 and 80 days ago count now.
    assert stays["New"] == (4, 24.0, 42.0)
    assert stays["Tier 1 Analysis"] == (4, 48.0, 19 * 24.0)
    assert whole.backlog_step == "week"
    assert whole.backlog[-1].open == 6


def test_reopen_rate_and_who_closed(report: Report) -> None:
    flow = report.flow
    assert (flow.left_closing, flow.reopened) == (3, 1)
    assert flow.reopen_rate == pytest.approx(1 / 3)
    assert (flow.closed_by_timer, flow.closed_by_person) == (1, 1)


def test_backlog_per_day(report: Report) -> None:
    points = {p.day.isoformat(): p.open for p in report.backlog}
    assert len(points) == 31 and report.backlog_step == "day"
    assert points["2026-10-31"] == 3  # A4, A5, A6 were open when the period began
    assert points["2026-11-05"] == 4  # C1 opened
    assert points["2026-11-10"] == 5  # A3
    assert points["2026-11-15"] == 6  # C2
    assert points["2026-11-25"] == 5  # C1 closed
    assert points["2026-11-27"] == 5  # A2 opened, C2 closed
    assert points["2026-11-30"] == 6  # A1


def test_emails_and_what_the_store_does_not_record(report: Report) -> None:
    emails = report.emails
    assert (emails.created, emails.sent, emails.waiting, emails.failed_attempts) == (3, 2, 1, 1)
    assert (emails.undelivered, emails.note) == (0, None)  # the outbox records them (0004)
    assert report.rejected.count is None
    assert report.rejected.note == "rejected events: not recorded by this store"


async def test_undelivered_emails_are_counted_where_the_store_records_them(
    fresh_store: Callable[[], Awaitable[str]],
) -> None:
    """A message the mail server refused for good, with its answer (the outbox's columns)."""
    url = await fresh_store()
    engine = make_engine(url, pooled=False)
    try:
        async with engine.begin() as conn:
            stamp = NOW - 9 * D
            value = (
                stamp
                if engine.dialect.name == "postgresql"
                else stamp.strftime("%Y-%m-%d %H:%M:%S.%f")
            )
            await conn.execute(
                text(
                    "UPDATE outbox SET undelivered_at = :at, undelivered_reason = :why "
                    "WHERE key = 'm3'"
                ),
                {"at": value, "why": "mailbox full"},
            )
        report = await build_report(engine, since=SINCE, until=NOW, now=NOW)
    finally:
        await engine.dispose()
    assert report.emails.undelivered == 1
    assert _counts(report.emails.undelivered_reasons) == {"mailbox full": 1}
    assert report.emails.note is None


@pytest.mark.parametrize(
    ("span", "instant", "earliest"),
    [
        ("14d", "2026-12-04T12:00:00", "2026-11-20T12:00:00"),
        ("3mo", "2026-12-11T12:00:00", "2026-09-11T12:00:00"),
        # No 31 Feb: every start in February ends by 28 March, so the earliest is 1 March.
        ("1mo", "2026-03-31T10:00:00", "2026-03-01T00:00:00"),
    ],
)
def test_the_earliest_start_whose_deadline_reaches_an_instant(
    span: str, instant: str, earliest: str
) -> None:
    s = Span.parse(span)
    at = datetime.fromisoformat(instant).replace(tzinfo=UTC)
    start = earliest_start(s, 1, at)
    assert start == datetime.fromisoformat(earliest).replace(tzinfo=UTC)
    assert s.after(start) >= at
    assert s.after(start - timedelta(microseconds=1)) < at


# ---- the command line --------------------------------------------------------------------------


def _cli(url: str, *args: str, expect: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), env={"CASES_DATABASE_URL": url, "COLUMNS": "200"})
    assert result.exit_code == expect, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def test_report_in_the_terminal_and_as_json(store_url: str) -> None:
    period = ("--since", SINCE.isoformat(), "--until", NOW.isoformat())
    shown = _cli(store_url, "report", *period)
    assert "Open cases" in shown and "Pending Customer Testing" in shown
    assert "reopened (Closing → Waiting for Process)" in shown
    assert "not recorded by this store" in shown
    data = json.loads(_cli(store_url, "report", *period, "--json", "--top", "2"))
    assert data["flow"]["reopened"] == 1
    assert data["since"] == "2026-10-31T12:00:00Z"
    assert _cli(store_url, "report", "--since", "yesterday", expect=2) == ""


def test_history_csv_round_trips_through_the_csv_module(store_url: str) -> None:
    written = _cli(store_url, "history", "C2", "--csv")
    rows = list(csv.DictReader(io.StringIO(written)))
    changes = [r for r in rows if r["kind"] == "status_change"]
    emails = [r for r in rows if r["kind"] == "email"]
    expected = [h for h in HISTORY if h["case_number"] == "C2"]
    assert [
        (r["seq"], r["from_status"], r["to_status"], r["actor_role"], r["note"]) for r in changes
    ] == [
        (str(h["seq"]), h["from_status"] or "", h["to_status"], h["actor_role"], h["note"])
        for h in expected
    ]
    assert [datetime.fromisoformat(r["at"]) for r in changes] == [h["at"] for h in expected]
    assert [(r["template"], r["recipient"]) for r in emails] == [
        ("closing", "ann@alma.example")
    ] * 2
    # The record is in time order, emails among the status changes.
    instants = [datetime.fromisoformat(r["at"]) for r in rows]
    assert instants == sorted(instants)
    # Written again from what was read, the file is the same.
    again = io.StringIO()
    writer = csv.DictWriter(again, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    assert again.getvalue() == written


def test_history_as_json_and_in_the_terminal(store_url: str) -> None:
    data = json.loads(_cli(store_url, "history", "C1", "--json"))
    assert data["case"]["status"] == "Closed"
    changes = [e for e in data["entries"] if e["kind"] == "status_change"]
    assert [e["fields"]["to_status"] for e in changes] == [
        "New",
        "Tier 1 Analysis",
        "Closing",
        "Closed",
    ]
    assert data["missing"] == []
    [change] = [e for e in data["entries"] if e["kind"] == "policy_change"]
    assert change["fields"]["reason"] == "a faster reminder"
    assert "pcr_reminder" in change["fields"]["changes"]
    shown = _cli(store_url, "history", "C1")
    assert "Closing → Closed" in shown and "system person (system)" in shown
    _cli(store_url, "history", "NO-SUCH-CASE", expect=3)


# ---- the page in a real browser ---------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "the Debian package chromium is missing (.ci/run installs it)"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_html_page_renders_with_its_charts_in_headless_chromium(
    store_url: str, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    period = ("--since", SINCE.isoformat(), "--until", NOW.isoformat())
    _cli(store_url, "report", *period, "--html", str(page))
    source = page.read_text()
    # Self-contained: nothing to fetch (the SVG namespaces are names, not requests).
    assert "<script" not in source and "<link" not in source and "src=" not in source

    dom = _chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count("<svg") == 5, "five charts"
    assert "Open cases by status" in dom.stdout and "Backlog over time" in dom.stdout

    shot = tmp_path / "report.png"
    taken = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    # Not a blank page: many distinct colours (charts, cards, text).
    colours = {tuple(p) for p in pixels[::7, ::7, :3].reshape(-1, 3).round(2).tolist()}
    assert len(colours) > 50


def test_the_readme_report_commands_run_as_written(store_url: str, tmp_path: Path) -> None:
    """The README's "Reports" block, on the hand-built store: README case 00123456 is C2 here,
    and files land in a temporary folder."""
    for line in readme.commands(readme.example("report")):
        line = line.split("#", 1)[0].replace("00123456", "C2")
        args = shlex.split(line)
        assert args[:3] == ["python", "-m", "starter"], line
        words, _, target = " ".join(args[3:]).partition(" > ")
        argv = [str(tmp_path / a) if a.endswith(".html") else a for a in words.split()]
        shown = _cli(store_url, *argv)
        if target:
            (tmp_path / target.strip()).write_text(shown)
    assert (tmp_path / "report.html").read_text().count("<svg") == 5
    assert len(list(csv.DictReader((tmp_path / "C2.csv").open()))) == 9


def test_a_store_without_the_schema_is_one_line_and_exit_3(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never-migrated.db'}"
    result = CliRunner().invoke(app, ["report"], env={"CASES_DATABASE_URL": url})
    assert result.exit_code == 3
    assert "python -m starter db upgrade" in result.stderr
    assert "no such table" in result.stderr
