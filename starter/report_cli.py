"""``python -m starter report`` and ``python -m starter history``: what the case store says, for
the people who run support. Both read the store (``CASES_DATABASE_URL``), not Temporal."""

from __future__ import annotations

import asyncio
import csv
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from activities.db import make_engine
from settings import Settings
from starter.history import CSV_COLUMNS, CaseHistory, case_history_of, csv_rows
from starter.output import BadInput, Code, emit_json, fail, handled, out, when
from starter.report import Report, build_report, duration


class Step(StrEnum):
    DAY = "day"
    WEEK = "week"


def _store_failed(problem: Exception, as_json: bool) -> NoReturn:
    url = make_url(Settings().database_url).render_as_string(hide_password=True)
    fail(
        Code.UNAVAILABLE,
        f"cannot read the case store {url} (is it reachable, and migrated with "
        f"`python -m starter db upgrade`?): {str(problem).splitlines()[0]}",
        as_json=as_json,
    )


def _instant(text: str, option: str) -> datetime:
    """An ISO date or instant; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{option} {text!r} is not an ISO date or instant (2026-11-01)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def _report(since: datetime, until: datetime, top: int, step: Step | None) -> Report:
    engine = make_engine(Settings().database_url, pooled=False)
    try:
        return await build_report(
            engine, since=since, until=until, top=top, step=None if step is None else step.value
        )
    finally:
        await engine.dispose()


def report(
    since: Annotated[
        str | None,
        typer.Option(help="Start of the period (ISO date or instant, UTC); default 30 days ago."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End of the period (exclusive); default now.")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="How many institutions to list.")] = 10,
    step: Annotated[
        Step | None,
        typer.Option(help="Backlog points per day or week (default: day up to 92 days)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    html_file: Annotated[
        Path | None,
        typer.Option("--html", help="Write the report as one self-contained HTML page."),
    ] = None,
) -> None:
    """The backlog at a glance, from the case store (CASES_DATABASE_URL): open cases by status,
    owner tier and institution; their age; deadlines ahead; time spent per status; reopenings;
    the backlog over time; emails."""
    with handled(as_json):
        end = _instant(until, "--until") if until else datetime.now(UTC)
        start = _instant(since, "--since") if since else end - timedelta(days=30)
        if start >= end:
            raise BadInput("--since must come before --until")
        try:
            result = asyncio.run(_report(start, end, top, step))
        except (SQLAlchemyError, OSError) as problem:
            _store_failed(problem, as_json)
    if html_file is not None:
        from starter.report_html import render

        html_file.write_text(render(result), encoding="utf-8")
        if not as_json:
            out().print(f"wrote {html_file}")
    if as_json:
        emit_json(result)
    elif html_file is None:
        _print_report(result)


def _table(title: str, *columns: str, labels: int = 1) -> Table:
    """A table whose first ``labels`` columns are text and the rest figures."""
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold")
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index < labels else "right")
    return table


def _print_report(r: Report) -> None:
    console = out()
    console.print(
        f"[bold]Support cases[/] {when(r.since)} to {when(r.until)}: [bold]{r.open_total:,}[/] open"
    )
    by_status = _table("Open cases", "status", "open", *(f"in status {b}" for b in r.age_buckets))
    ages = {a.status: a for a in r.age}
    for c in r.by_status:
        row = ages.get(c.key)
        cells = [f"{row.in_status[b]:,}" if row else "0" for b in r.age_buckets]
        by_status.add_row(c.key, f"{c.count:,}", *cells)
    console.print(by_status)
    opened = _table("Age of open cases (since opened)", "status", *r.age_buckets)
    for a in r.age:
        opened.add_row(a.status, *(f"{a.age[b]:,}" for b in r.age_buckets))
    console.print(opened)
    tiers = _table("By owner tier", "tier", "open")
    for c in r.by_owner_tier:
        tiers.add_row(c.key, f"{c.count:,}")
    console.print(tiers)
    institutions = _table(f"Top {len(r.by_institution)} institutions", "institution", "open")
    for c in r.by_institution:
        institutions.add_row(c.key, f"{c.count:,}")
    if r.institutions_other:
        institutions.add_row("all others", f"{r.institutions_other:,}")
    console.print(institutions)
    deadlines = _table("Deadlines ahead", "deadline", "status", "next 7 d", "next 30 d", labels=2)
    for d in r.deadlines:
        deadlines.add_row(
            d.kind, d.status, *("n/a" if v is None else f"{v:,}" for v in d.within.values())
        )
    console.print(deadlines)
    console.print(f"[dim]deadlines {r.deadline_note}[/]")
    stays = _table(
        "Time spent in each status (stays ended in the period)", "status", "stays", "median", "p90"
    )
    for s in r.stays:
        stays.add_row(s.status, f"{s.stays:,}", duration(s.median_s), duration(s.p90_s))
    console.print(stays)
    f, e = r.flow, r.emails
    rate = "n/a" if f.reopen_rate is None else f"{f.reopen_rate:.1%}"
    flow = _table("In the period", "what", "count")
    flow.add_row("left Closing", f"{f.left_closing:,}")
    flow.add_row("reopened (Closing → Waiting for Process)", f"{f.reopened:,} ({rate})")
    flow.add_row("closed by the timer", f"{f.closed_by_timer:,}")
    flow.add_row("closed by a person", f"{f.closed_by_person:,}")
    flow.add_row("emails created / sent / waiting", f"{e.created:,} / {e.sent:,} / {e.waiting:,}")
    flow.add_row("emails waiting after a refused attempt", f"{e.failed_attempts:,}")
    flow.add_row("undelivered emails", "n/a" if e.undelivered is None else f"{e.undelivered:,}")
    rejected = r.rejected.count
    flow.add_row("rejected events", "n/a" if rejected is None else f"{rejected:,}")
    console.print(flow)
    for note in (e.note, r.rejected.note):
        if note:
            console.print(f"[dim]{note}[/]")
    backlog = _table(f"Backlog (open at the end of each {r.backlog_step})", "day", "open")
    for p in r.backlog:
        backlog.add_row(p.day.isoformat(), f"{p.open:,}")
    console.print(backlog)


async def _history(number: str) -> CaseHistory:
    engine = make_engine(Settings().database_url, pooled=False)
    try:
        return await case_history_of(engine, number)
    finally:
        await engine.dispose()


def history(
    case_number: Annotated[str, typer.Argument(metavar="CASE", help="The case number.")],
    as_csv: Annotated[bool, typer.Option("--csv", help="One CSV row per entry.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """The full record of one case from the case store: every status change (actor, note,
    instant), every email; for audits, and for cases whose workflow history is gone."""
    with handled(as_json):
        try:
            record = asyncio.run(_history(case_number))
        except (SQLAlchemyError, OSError) as problem:
            _store_failed(problem, as_json)
    if record.case is None and not record.entries:
        fail(Code.UNAVAILABLE, f"no case {case_number} in the case store", as_json=as_json)
    if as_json:
        emit_json(record)
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(record))
    else:
        _print_history(record)


def _print_history(record: CaseHistory) -> None:
    console = out()
    case = record.case or {}
    if case:
        console.print(
            f"[bold]Case {record.case_number}[/] · {case['institution']} · {case['priority']} — "
            f"{case['title']}\n{case['status']} since {when(case['status_since'])}, "
            f"opened {when(case['opened_at'])}"
        )
    table = Table(header_style="bold")
    for name in ("at", "what", "who", "details"):
        table.add_column(name)
    for entry in record.entries:
        f = entry.fields
        if entry.kind == "status_change":
            what = f"{f['from_status'] or '(opened)'} → {f['to_status']}"
            who = f"{f['actor_name']} ({f['actor_role']})"
            details = f["note"] or ""
        elif entry.kind == "email":
            what = f"email {f['template']} to {f['recipient']}"
            who = ""
            sent = f"sent {when(f['sent_at'])}" if f["sent_at"] else "not sent"
            details = f"{sent}; {f['subject']}"
        else:
            what = entry.kind.replace("_", " ")
            who = f"{f.get('actor_name') or ''}"
            details = ", ".join(f"{k}={v}" for k, v in f.items() if v and k != "actor_name")
        table.add_row(when(entry.at), what, who, details)
    console.print(table)
    if record.missing:
        console.print(f"[dim]{', '.join(record.missing)}: not recorded by this store[/]")
