"""``python -m starter report``: the backlog at a glance, computed by the case store's database.

Every figure is one SQL query (SQLAlchemy Core) whose result has a row per status, kind or day,
never a row per case: the store may hold millions of history rows, and the database, with the
indexes of migration 0003, aggregates them in seconds. The same queries run on SQLite and
PostgreSQL; the few dialect differences (durations, days) live in ``_seconds`` and ``_day``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    ColumnElement,
    Float,
    Index,
    MetaData,
    String,
    Table,
    and_,
    case,
    column,
    false,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    table,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from activities.store import UtcDateTime, case_history, cases, outbox
from workflows.calendar import Span, add_months
from workflows.contract import DeadlineKind, DeadlinePolicy, Role, Status

# Age buckets of open cases (since opened, and since entering the current status): upper bounds.
AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("< 1 d", timedelta(days=1)),
    ("1-7 d", timedelta(days=7)),
    ("7-30 d", timedelta(days=30)),
    ("30-90 d", timedelta(days=90)),
    ("> 90 d", None),
)
DEADLINE_WINDOWS = (7, 30)
# Reopening: a case in Closing that goes back to work instead of closing.
REOPEN_FROM, REOPEN_TO = Status.CLOSING, Status.WAITING_FOR_PROCESS
NOT_RECORDED = "not recorded by this store"
# Another store version may record these; the report counts them when the columns exist.
UNDELIVERED_COLUMNS = ("undelivered_at", "undelivered_reason")
REJECTED_TABLE = "rejected_events"


# ---- the report's shape (also its --json) ---------------------------------------------------


class Count(BaseModel):
    key: str
    count: int


class AgeRow(BaseModel):
    """Open cases of one status by how long ago they were opened and entered the status."""

    status: str
    open: int
    age: dict[str, int]
    in_status: dict[str, int]


class DeadlineRow(BaseModel):
    kind: str
    status: str
    # Cases whose deadline of this kind falls within the next N days, keyed by N; None when the
    # store cannot tell (release_closing needs the release's ship date).
    within: dict[int, int | None]


class StayRow(BaseModel):
    """Completed stays in a status that ended within the period (nearest-rank percentiles)."""

    status: str
    stays: int
    median_s: float
    p90_s: float


class Flow(BaseModel):
    left_closing: int
    reopened: int
    reopen_rate: float | None
    closed_by_timer: int
    closed_by_person: int


class BacklogPoint(BaseModel):
    day: date
    open: int


class Emails(BaseModel):
    created: int
    sent: int
    waiting: int
    failed_attempts: int  # waiting, with the last attempt refused by the SMTP server
    undelivered: int | None
    undelivered_reasons: list[Count]
    note: str | None = None


class Rejected(BaseModel):
    count: int | None
    by_reason: list[Count]
    note: str | None = None


class Report(BaseModel):
    generated_at: datetime
    since: datetime
    until: datetime
    store: str
    open_total: int
    by_status: list[Count]
    by_owner_tier: list[Count]
    by_institution: list[Count]
    institutions_other: int
    age_buckets: list[str]
    age: list[AgeRow]
    deadlines: list[DeadlineRow]
    deadline_note: str
    stays: list[StayRow]
    flow: Flow
    backlog_step: str
    backlog: list[BacklogPoint]
    emails: Emails
    rejected: Rejected


# ---- dialect helpers ---------------------------------------------------------------------------


def _instant(value: datetime) -> ColumnElement[datetime]:
    """A bound instant stored the way the store's columns store it."""
    return literal(value, UtcDateTime)


def _seconds(start: ColumnElement[Any], end: ColumnElement[Any], dialect: str) -> Any:
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86_400.0
    return func.extract("epoch", end - start)


def _day(column: ColumnElement[Any], dialect: str) -> Any:
    """The UTC calendar day of an instant, as ``YYYY-MM-DD`` text."""
    if dialect == "sqlite":
        return func.date(column)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


def earliest_start(span: Span, times: int, instant: datetime) -> datetime:
    """The earliest ``start`` with ``span.after(start, times) >= instant``.

    ``after`` never decreases as its start moves later, so "a deadline falls in [a, b)" is
    "the status was entered in [earliest_start(a), earliest_start(b))": a range the index on
    (status, status_since) answers. Month spans clamp to the month's end (Jan 31 + 1 month is
    Feb 28), so when the day does not exist ``times`` months back, no start in that month
    reaches ``instant`` and the earliest is the first of the next month.
    """
    if span.unit != "mo":
        return instant - (span.after(instant, times) - instant)
    back = add_months(instant, -span.count * times)
    if back.day == instant.day:
        return back
    first_of_next = add_months(back.replace(day=1), 1)
    return first_of_next.replace(hour=0, minute=0, second=0, microsecond=0)


# ---- the queries --------------------------------------------------------------------------------

OPEN = cases.c.status != str(Status.CLOSED)


async def _rows(conn: AsyncConnection, query: Executable) -> Sequence[Any]:
    return (await conn.execute(query)).all()


def _bucket(column: ColumnElement[Any], now: datetime) -> Any:
    """The index into AGE_BUCKETS of the time since ``column``."""
    whens = [
        (column > _instant(now - bound), index)
        for index, (_, bound) in enumerate(AGE_BUCKETS)
        if bound is not None
    ]
    return case(*whens, else_=len(AGE_BUCKETS) - 1)


async def _open_counts(
    conn: AsyncConnection, top: int
) -> tuple[list[Count], list[Count], list[Count], int]:
    status = await _rows(
        conn, select(cases.c.status, func.count()).where(OPEN).group_by(cases.c.status)
    )
    order = {str(s): i for i, s in enumerate(Status)}
    by_status = sorted(
        (Count(key=s, count=n) for s, n in status), key=lambda c: order.get(c.key, 99)
    )
    tiers = await _rows(
        conn,
        select(cases.c.owner_tier, func.count())
        .where(OPEN)
        .group_by(cases.c.owner_tier)
        .order_by(cases.c.owner_tier),
    )
    by_tier = [Count(key=f"Tier {t}", count=n) for t, n in tiers]
    n_cases = func.count().label("n")
    institutions = await _rows(
        conn,
        select(cases.c.institution, n_cases)
        .where(OPEN)
        .group_by(cases.c.institution)
        .order_by(n_cases.desc(), cases.c.institution)
        .limit(top),
    )
    by_institution = [Count(key=i, count=n) for i, n in institutions]
    total = sum(c.count for c in by_status)
    return by_status, by_tier, by_institution, total - sum(c.count for c in by_institution)


async def _ages(conn: AsyncConnection, now: datetime) -> list[AgeRow]:
    age = _bucket(cases.c.opened_at, now).label("age")
    stay = _bucket(cases.c.status_since, now).label("stay")
    rows = await _rows(
        conn,
        select(cases.c.status, age, stay, func.count())
        .where(OPEN)
        .group_by(cases.c.status, age, stay),
    )
    names = [name for name, _ in AGE_BUCKETS]
    out: dict[str, AgeRow] = {}
    for status, a, s, n in rows:
        row = out.setdefault(
            status,
            AgeRow(
                status=status,
                open=0,
                age=dict.fromkeys(names, 0),
                in_status=dict.fromkeys(names, 0),
            ),
        )
        row.open += n
        row.age[names[a]] += n
        row.in_status[names[s]] += n
    order = {str(s): i for i, s in enumerate(Status)}
    return sorted(out.values(), key=lambda r: order.get(r.status, 99))


# Which deadline acts in which status, and the policy's span for it (lifecycle.pending_deadlines).
_DEADLINE_STATUS = {
    DeadlineKind.PCR_REMINDER: Status.PENDING_CUSTOMER_RESPONSE,
    DeadlineKind.PCR_CLOSING: Status.PENDING_CUSTOMER_RESPONSE,
    DeadlineKind.CLOSING_CLOSED: Status.CLOSING,
    DeadlineKind.WORK_PLAN_REVIEW: Status.PENDING_WORK_PLAN,
    DeadlineKind.WORK_PLAN_EXPIRY: Status.PENDING_WORK_PLAN,
    DeadlineKind.RELEASE_CLOSING: Status.PENDING_RELEASE,
    DeadlineKind.TESTING_CLOSED: Status.PENDING_CUSTOMER_TESTING,
}
DEADLINE_NOTE = (
    "computed from each case's status and status_since with the default deadline policy "
    "(the store does not record a case's own policy); release_closing needs the release's "
    "ship date, which the store does not record"
)


def _reviews(policy: DeadlinePolicy) -> int:
    """How many reassessments fit before the work plan expires (each counted from entry)."""
    probe = datetime(2001, 1, 31, tzinfo=UTC)
    expiry, times = policy.work_plan_expiry.after(probe), 0
    while times < 1_000 and policy.work_plan_review.after(probe, times + 1) < expiry:
        times += 1
    return times


def _due_within(kind: DeadlineKind, policy: DeadlinePolicy, now: datetime, end: datetime) -> Any:
    """True for a case whose ``kind`` deadline falls in [now, end)."""
    since = cases.c.status_since
    in_status = cases.c.status == str(_DEADLINE_STATUS[kind])
    if kind is DeadlineKind.WORK_PLAN_REVIEW:
        span, occurrences = policy.work_plan_review, range(1, _reviews(policy) + 1)
    else:
        span, occurrences = getattr(policy, kind.value), range(1, 2)
    ranges = [
        and_(
            since >= _instant(earliest_start(span, k, now)),
            since < _instant(earliest_start(span, k, end)),
        )
        for k in occurrences
    ]
    return and_(in_status, or_(false(), *ranges))


async def _deadlines(conn: AsyncConnection, now: datetime) -> list[DeadlineRow]:
    policy = DeadlinePolicy()
    known = [k for k in DeadlineKind if k is not DeadlineKind.RELEASE_CLOSING]
    columns = [
        func.coalesce(
            func.sum(case((_due_within(k, policy, now, now + timedelta(days=d)), 1), else_=0)), 0
        )
        for k in known
        for d in DEADLINE_WINDOWS
    ]
    timed = cases.c.status.in_([str(s) for s in set(_DEADLINE_STATUS.values())])
    values = iter((await _rows(conn, select(*columns).where(timed)))[0])
    figures: dict[DeadlineKind, dict[int, int | None]] = {
        k: {d: int(next(values)) for d in DEADLINE_WINDOWS} for k in known
    }
    return [
        DeadlineRow(
            kind=str(k),
            status=str(_DEADLINE_STATUS[k]),
            within=dict(figures.get(k, dict.fromkeys(DEADLINE_WINDOWS))),
        )
        for k in DeadlineKind
    ]


async def _stays(
    conn: AsyncConnection, since: datetime, until: datetime, dialect: str
) -> list[StayRow]:
    h = case_history.c
    period = and_(h.at >= _instant(since), h.at < _instant(until))
    in_period, total = (
        await _rows(
            conn, select(func.count().filter(period), func.count()).select_from(case_history)
        )
    )[0]
    if in_period * 4 < total:
        # A short period: a stay ends with a history row in the period (found through the index
        # on ``at``) and began at the case's previous row (one primary-key seek per stay).
        before = case_history.alias("before")
        entered = (
            select(before.c.at)
            .where(before.c.case_number == h.case_number, before.c.seq < h.seq)
            .order_by(before.c.seq.desc())
            .limit(1)
            .scalar_subquery()
        )
        ended = (
            select(h.from_status.label("status"), _seconds(entered, h.at, dialect).label("seconds"))
            .where(period, h.from_status.is_not(None))
            .subquery("ended")
        )
    else:
        # Most of the history: one ordered pass pairs every row with the case's next one.
        left = type_coerce(
            func.lead(h.at).over(partition_by=h.case_number, order_by=h.seq), UtcDateTime
        )
        stays = select(
            h.to_status.label("status"), h.at.label("entered"), left.label("left")
        ).subquery("stays")
        ended = (
            select(
                stays.c.status, _seconds(stays.c.entered, stays.c.left, dialect).label("seconds")
            )
            .where(stays.c.left >= _instant(since), stays.c.left < _instant(until))
            .subquery("ended")
        )
    order = {str(s): i for i, s in enumerate(Status)}
    if dialect == "postgresql":
        pct = [func.percentile_disc(p).within_group(ended.c.seconds) for p in PERCENTILES]
        query = select(ended.c.status, func.count(), *pct).group_by(ended.c.status)
        figures = [(s, n, *values) for s, n, *values in await _rows(conn, query)]
    else:
        figures = await _ranks_in_temp_table(conn, ended)
    rows = [
        StayRow(status=s, stays=int(n), median_s=float(median), p90_s=float(p90))
        for s, n, median, p90 in figures
    ]
    return sorted(rows, key=lambda r: order.get(r.status, 99))


# Nearest rank (percentile_disc): the smallest value with at least p of the values at or below.
PERCENTILES = (0.5, 0.9)


async def _ranks_in_temp_table(conn: AsyncConnection, ended: Any) -> list[tuple[Any, ...]]:
    """Percentiles where the database has no percentile function (SQLite): the stays go into a
    temporary table indexed by (status, seconds), where the k-th of a status is one seek."""
    scratch = Table(
        "report_stays",
        MetaData(),
        Column("status", String),
        Column("seconds", Float),
        Index("ix_report_stays", "status", "seconds"),
        prefixes=["TEMPORARY"],
    )
    await conn.run_sync(scratch.drop, checkfirst=True)
    await conn.run_sync(scratch.create)
    try:
        await conn.execute(
            insert(scratch).from_select(
                ["status", "seconds"], select(ended.c.status, ended.c.seconds)
            )
        )
        counts = await _rows(
            conn, select(scratch.c.status, func.count()).group_by(scratch.c.status)
        )
        out = []
        for status, n in counts:
            values = []
            for p in PERCENTILES:
                rank = max(math.ceil(p * n - 1e-9), 1)
                kth = (
                    select(scratch.c.seconds)
                    .where(scratch.c.status == status)
                    .order_by(scratch.c.seconds)
                    .limit(1)
                    .offset(rank - 1)
                )
                values.append((await _rows(conn, kth))[0][0])
            out.append((status, n, *values))
        return out
    finally:
        await conn.run_sync(scratch.drop)


async def _flow(conn: AsyncConnection, since: datetime, until: datetime) -> Flow:
    # Two queries, each answered from its own covering index of migration 0003.
    h = case_history.c
    period = and_(h.at >= _instant(since), h.at < _instant(until))
    left, reopened = (
        await _rows(
            conn,
            select(func.count(), func.count().filter(h.to_status == str(REOPEN_TO))).where(
                h.from_status == str(REOPEN_FROM), period
            ),
        )
    )[0]
    by_timer = h.actor_role == str(Role.SYSTEM)
    timer, person = (
        await _rows(
            conn,
            select(func.count().filter(by_timer), func.count().filter(~by_timer)).where(
                h.to_status == str(Status.CLOSED), period
            ),
        )
    )[0]
    return Flow(
        left_closing=left,
        reopened=reopened,
        reopen_rate=reopened / left if left else None,
        closed_by_timer=timer,
        closed_by_person=person,
    )


async def _backlog(
    conn: AsyncConnection, since: datetime, until: datetime, dialect: str, step: str
) -> list[BacklogPoint]:
    """Open cases at the end of each day (or week) of the period: the cases open at its start,
    plus the day's openings, minus its closings."""
    c = cases.c
    at_start = (
        await _rows(
            conn,
            select(func.count()).where(
                c.opened_at < _instant(since),
                or_(c.closed_at.is_(None), c.closed_at >= _instant(since)),
            ),
        )
    )[0][0]

    async def per_day(column: Any) -> dict[str, int]:
        day = _day(column, dialect).label("day")
        rows = await _rows(
            conn,
            select(day, func.count())
            .where(column >= _instant(since), column < _instant(until))
            .group_by(day),
        )
        return {d: n for d, n in rows}

    opened, closed = await per_day(c.opened_at), await per_day(c.closed_at)
    points, level = [], at_start
    day, last = since.date(), (until - timedelta(microseconds=1)).date()
    while day <= last:
        key = day.isoformat()
        level += opened.get(key, 0) - closed.get(key, 0)
        if step == "day" or day.weekday() == 6 or day == last:
            points.append(BacklogPoint(day=day, open=level))
        day += timedelta(days=1)
    return points


def _schema(sync: Connection) -> dict[str, set[str]]:
    inspector = inspect(sync)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


async def _emails(
    conn: AsyncConnection, since: datetime, until: datetime, schema: dict[str, set[str]]
) -> Emails:
    o = outbox.c
    waiting = o.sent_at.is_(None)
    created, sent, pending, failed = (
        await _rows(
            conn,
            select(
                func.count(),
                func.count().filter(o.sent_at.is_not(None)),
                func.count().filter(waiting),
                func.count().filter(waiting, o.last_error.is_not(None)),
            ).where(o.created_at >= _instant(since), o.created_at < _instant(until)),
        )
    )[0]
    emails = Emails(
        created=created,
        sent=sent,
        waiting=pending,
        failed_attempts=failed,
        undelivered=None,
        undelivered_reasons=[],
    )
    if not set(UNDELIVERED_COLUMNS) <= schema.get("outbox", set()):
        emails.note = f"undelivered emails: {NOT_RECORDED}"
        return emails
    # Named here, not in the store's table: this store version may not have the columns.
    t = table("outbox", column("undelivered_at", UtcDateTime), column("undelivered_reason"))
    n = func.count().label("n")
    rows = await _rows(
        conn,
        select(t.c.undelivered_reason, n)
        .where(
            t.c.undelivered_at >= _instant(since),
            t.c.undelivered_at < _instant(until),
        )
        .group_by(t.c.undelivered_reason)
        .order_by(n.desc()),
    )
    emails.undelivered = sum(count for _, count in rows)
    emails.undelivered_reasons = [Count(key=str(r), count=count) for r, count in rows]
    return emails


async def _rejected(
    conn: AsyncConnection, since: datetime, until: datetime, schema: dict[str, set[str]]
) -> Rejected:
    if not {"at", "reason"} <= schema.get(REJECTED_TABLE, set()):
        return Rejected(count=None, by_reason=[], note=f"rejected events: {NOT_RECORDED}")
    t = table(REJECTED_TABLE, column("at", UtcDateTime), column("reason"))
    n = func.count().label("n")
    rows = await _rows(
        conn,
        select(t.c.reason, n)
        .where(t.c.at >= _instant(since), t.c.at < _instant(until))
        .group_by(t.c.reason)
        .order_by(n.desc()),
    )
    return Rejected(
        count=sum(count for _, count in rows),
        by_reason=[Count(key=str(r), count=count) for r, count in rows],
    )


async def build_report(
    engine: AsyncEngine,
    *,
    since: datetime,
    until: datetime,
    now: datetime | None = None,
    top: int = 10,
    step: str | None = None,
) -> Report:
    """Every figure of the report; ``now`` (default: the clock) anchors ages and deadlines."""
    now = now or datetime.now(UTC)
    dialect = engine.dialect.name
    step = step or ("day" if until - since <= timedelta(days=92) else "week")
    async with engine.connect() as conn:
        schema = await conn.run_sync(_schema)
        by_status, by_tier, by_institution, others = await _open_counts(conn, top)
        report = Report(
            generated_at=now,
            since=since,
            until=until,
            store=engine.url.render_as_string(hide_password=True),
            open_total=sum(c.count for c in by_status),
            by_status=by_status,
            by_owner_tier=by_tier,
            by_institution=by_institution,
            institutions_other=others,
            age_buckets=[name for name, _ in AGE_BUCKETS],
            age=await _ages(conn, now),
            deadlines=await _deadlines(conn, now),
            deadline_note=DEADLINE_NOTE,
            stays=await _stays(conn, since, until, dialect),
            flow=await _flow(conn, since, until),
            backlog_step=step,
            backlog=await _backlog(conn, since, until, dialect, step),
            emails=await _emails(conn, since, until, schema),
            rejected=await _rejected(conn, since, until, schema),
        )
    return report


def duration(seconds: float | None) -> str:
    """A duration as people read it: ``45 s``, ``12 min``, ``5.2 h``, ``3.1 d``."""
    if seconds is None:
        return "—"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{seconds:.0f} s"
