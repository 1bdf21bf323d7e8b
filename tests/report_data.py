"""A synthetic case store for the report: many cases walking a plausible lifecycle, written with
bulk inserts (SQLite ``executemany`` on one connection, PostgreSQL ``COPY``), so a store of
100,000 cases and 1,000,000 history rows loads in seconds.

The walks are random but seeded: the same arguments give the same store.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from workflows.contract import Status

S = Status

# Where a case goes next, with weights; "(timer)" marks the moves the lifecycle's timers make.
CHAIN: dict[Status, list[tuple[Status, float, bool]]] = {
    S.NEW: [(S.TIER1_ANALYSIS, 1.0, False)],
    S.TIER1_ANALYSIS: [
        (S.PENDING_CUSTOMER_RESPONSE, 0.4, False),
        (S.TIER2_NEW, 0.2, False),
        (S.CLOSING, 0.3, False),
        (S.WAITING_FOR_PROCESS, 0.1, False),
    ],
    S.PENDING_CUSTOMER_RESPONSE: [(S.TIER1_ANALYSIS, 0.7, False), (S.CLOSING, 0.3, True)],
    S.WAITING_FOR_PROCESS: [(S.TIER1_ANALYSIS, 1.0, False)],
    S.TIER2_NEW: [(S.TIER2_ANALYSIS, 1.0, False)],
    S.TIER2_ANALYSIS: [
        (S.DEVELOPMENT, 0.35, False),
        (S.TIER2_W4I, 0.3, False),
        (S.CLOSING, 0.35, False),
    ],
    S.TIER2_W4I: [(S.TIER2_ANALYSIS, 1.0, False)],
    S.DEVELOPMENT: [(S.PENDING_RELEASE, 0.7, False), (S.PENDING_WORK_PLAN, 0.3, False)],
    S.PENDING_RELEASE: [(S.CLOSING, 1.0, True)],
    S.PENDING_WORK_PLAN: [(S.CLOSING, 1.0, True)],
    S.CLOSING: [
        (S.CLOSED, 0.55, True),
        (S.CLOSED, 0.3, False),
        (S.WAITING_FOR_PROCESS, 0.15, False),
    ],
}
# Mean stay per status, in days (exponentially distributed).
MEAN_DAYS: dict[Status, float] = {
    S.NEW: 0.3,
    S.TIER1_ANALYSIS: 2.0,
    S.PENDING_CUSTOMER_RESPONSE: 9.0,
    S.WAITING_FOR_PROCESS: 1.0,
    S.TIER2_NEW: 1.5,
    S.TIER2_ANALYSIS: 6.0,
    S.TIER2_W4I: 4.0,
    S.DEVELOPMENT: 25.0,
    S.PENDING_RELEASE: 30.0,
    S.PENDING_WORK_PLAN: 90.0,
    S.CLOSING: 10.0,
}
INSTITUTIONS = [
    "Alma University",
    "Northbridge College",
    "City Library Consortium",
    "St. Clare Institute",
    "Harbour Polytechnic",
    "Lakeside University",
    "Museum of Letters",
    "Riverside School Board",
    "Eastfield Academy",
    "Westmoor University",
    "Hillcrest Library",
    "Capital Research Centre",
]
ROLES = {True: ("system", "lifecycle"), False: ("tier1", "Tom One")}


@dataclass
class Store:
    cases: list[tuple[Any, ...]] = field(default_factory=list)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)


CASE_COLUMNS = (
    "case_number",
    "institution",
    "product",
    "priority",
    "title",
    "contact_email",
    "status",
    "status_since",
    "owner_tier",
    "release_id",
    "opened_at",
    "closed_at",
    "case_references",
    "seq",
    "updated_at",
)
HISTORY_COLUMNS = (
    "case_number",
    "seq",
    "from_status",
    "to_status",
    "at",
    "actor_role",
    "actor_name",
    "actor_institution",
    "note",
)
OUTBOX_COLUMNS = (
    "key",
    "case_number",
    "template",
    "recipient",
    "subject",
    "body",
    "message_id",
    "created_at",
    "sent_at",
    "attempts",
    "last_error",
    "resent_in_doubt",
)
_TIER2 = {S.TIER2_NEW, S.TIER2_ANALYSIS, S.TIER2_W4I, S.DEVELOPMENT, S.PENDING_WORK_PLAN}
_MAILED = {S.PENDING_CUSTOMER_RESPONSE, S.CLOSING, S.CLOSED}


def generate(
    cases: int, now: datetime, *, rows_per_case: int | None = None, days: int = 365, seed: int = 1
) -> Store:
    """``cases`` cases opened over the ``days`` before ``now``.

    Without ``rows_per_case`` a walk ends when it reaches Closed or its next move would lie
    after ``now``; with it, every case has exactly that many history rows (Closed only as the
    last one; the case opened early enough for its walk to end before ``now``).
    """
    rng = random.Random(seed)
    store = Store()
    for index in range(cases):
        number = f"R{index:07d}"
        institution = INSTITUTIONS[min(int(rng.paretovariate(1.2)) - 1, len(INSTITUTIONS) - 1)]
        walk: list[tuple[Status | None, Status, float, bool]] = [(None, S.NEW, 0.0, False)]
        status, offset = S.NEW, 0.0
        while status is not S.CLOSED:
            if rows_per_case is not None and len(walk) == rows_per_case:
                break
            offset += rng.expovariate(1 / MEAN_DAYS[status])
            moves = CHAIN[status]
            if rows_per_case is not None and len(walk) < rows_per_case - 1:
                moves = [m for m in moves if m[0] is not S.CLOSED] or moves
            nxt, _, timer = rng.choices(moves, weights=[w for _, w, _ in moves])[0]
            walk.append((status, nxt, offset, timer))
            status = nxt
        if rows_per_case is None:
            opened = now - timedelta(days=rng.uniform(0, days))
        else:
            opened = now - timedelta(days=walk[-1][2] + rng.uniform(0, days))
        seq = 0
        for source, target, at_days, timer in walk:
            at = opened + timedelta(days=at_days)
            if at > now:
                break
            seq += 1
            role, name = (
                ("customer", "Ann Customer") if target is S.CLOSED and not timer else (ROLES[timer])
            )
            store.history.append(
                (
                    number,
                    seq,
                    None if source is None else str(source),
                    str(target),
                    at,
                    role,
                    name,
                    None,
                    None,
                )
            )
            status = target
            since = at
            if target in _MAILED and rows_per_case is None:
                sent = None if rng.random() < 0.01 else at + timedelta(seconds=2)
                store.outbox.append(
                    (
                        f"{number}:{seq}",
                        number,
                        "status",
                        "ann@example.org",
                        f"Case {number}",
                        "",
                        f"<{number}.{seq}@example.org>",
                        at,
                        sent,
                        1,
                        None if sent else "452 4.2.2 Mailbox full",
                        0,
                    )
                )
        priority = rng.choices(["critical", "high", "normal", "low"], [1, 4, 12, 3])[0]
        store.cases.append(
            (
                number,
                institution,
                "Alma",
                priority,
                "A report shows wrong totals",
                "ann@example.org",
                str(status),
                since,
                2 if status in _TIER2 else 1,
                None,
                opened,
                since if status is S.CLOSED else None,
                None,
                seq,
                now,
            )
        )
    return store


def _sqlite_instant(value: datetime | None) -> str | None:
    # The text SQLAlchemy's SQLite DateTime writes (UTC, naive), so comparisons line up.
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _rows_for_sqlite(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(_sqlite_instant(v) if isinstance(v, datetime) else v for v in r) for r in rows]


async def bulk_load(url: str, store: Store) -> None:
    """Write ``store`` into an upgraded, empty case store at ``url``."""
    parsed = make_url(url)
    tables = (
        ("cases", CASE_COLUMNS, store.cases),
        ("case_history", HISTORY_COLUMNS, store.history),
        ("outbox", OUTBOX_COLUMNS, store.outbox),
    )
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database
        conn = sqlite3.connect(parsed.database)
        try:
            with conn:
                for name, columns, rows in tables:
                    marks = ", ".join("?" for _ in columns)
                    conn.executemany(
                        f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks})",
                        _rows_for_sqlite(rows),
                    )
            conn.execute("ANALYZE")
        finally:
            conn.close()
        return
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    pg = await asyncpg.connect(dsn)
    try:
        for name, columns, rows in tables:
            await pg.copy_records_to_table(name, records=rows, columns=list(columns))
        await pg.execute("ANALYZE")
    finally:
        await pg.close()


# ---- the big store, vectorised: 100,000 cases x 10 history rows in seconds -----------------


@dataclass
class Columns:
    """Rows as text columns (instants as the store's UTC text), ready for bulk loading."""

    cases: list[tuple[Any, ...]]
    history: list[tuple[Any, ...]]


def generate_many(cases: int, rows_per_case: int, now: datetime, seed: int = 1) -> Columns:
    """``cases`` walks of exactly ``rows_per_case`` status changes over the last year (Closed
    only as the last), built with numpy: the shape of ``generate`` at a hundred times the pace."""
    import numpy as np

    rng = np.random.default_rng(seed)
    statuses = [s for s in Status]
    index = {s: i for i, s in enumerate(statuses)}
    closed = index[S.CLOSED]
    matrix = np.zeros((len(statuses), len(statuses)))
    for source, moves in CHAIN.items():
        for target, weight, _ in moves:
            matrix[index[source], index[target]] += weight
    matrix[closed, closed] = 1.0
    open_matrix = matrix.copy()
    open_matrix[:, closed] = 0.0
    open_matrix[closed, index[S.WAITING_FOR_PROCESS]] = 1.0
    means = np.array([MEAN_DAYS.get(s, 1.0) for s in statuses]) * 86_400.0

    walk = np.empty((cases, rows_per_case), dtype=np.int64)
    walk[:, 0] = index[S.NEW]
    for step in range(1, rows_per_case):
        weights = (matrix if step == rows_per_case - 1 else open_matrix)[walk[:, step - 1]]
        cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
        walk[:, step] = (cumulative < rng.random((cases, 1))).sum(axis=1)
    stays = rng.exponential(means[walk[:, :-1]])
    offsets = np.concatenate([np.zeros((cases, 1)), np.cumsum(stays, axis=1)], axis=1)
    start = now.timestamp() - offsets[:, -1] - rng.uniform(0, 365 * 86_400.0, cases)
    at = ((start[:, None] + offsets) * 1e6).astype("datetime64[us]")
    text = np.char.replace(np.datetime_as_string(at, unit="us"), "T", " ")
    timer = rng.random((cases, rows_per_case)) < 0.65

    # Plain Python lists: element access on numpy arrays would be most of the time.
    names = np.array([str(s) for s in statuses], dtype=object)
    targets = names[walk].tolist()
    sources = [[None, *row[:-1]] for row in targets]
    instants = text.tolist()
    roles = np.where(timer, "system", "tier1").tolist()
    actors = np.where(timer, "lifecycle", "Tom One").tolist()
    numbers = [f"B{i:07d}" for i in range(cases)]
    seqs = list(range(1, rows_per_case + 1))
    history = [
        (number, seq, source, target, at, role, actor, None, None)
        for number, *per_case in zip(
            numbers, sources, targets, instants, roles, actors, strict=True
        )
        for seq, source, target, at, role, actor in zip(seqs, *per_case, strict=True)
    ]
    now_text = _sqlite_instant(now)
    tier2 = {str(s) for s in _TIER2}
    rows = [
        (
            number,
            INSTITUTIONS[c % len(INSTITUTIONS)],
            "Alma",
            "normal",
            "A report shows wrong totals",
            "ann@example.org",
            path[-1],
            at[-1],
            2 if path[-1] in tier2 else 1,
            None,
            at[0],
            at[-1] if path[-1] == str(S.CLOSED) else None,
            None,
            rows_per_case,
            now_text,
        )
        for c, (number, path, at) in enumerate(zip(numbers, targets, instants, strict=True))
    ]
    return Columns(cases=rows, history=history)


async def bulk_load_text(url: str, columns: Columns) -> None:
    """Write ``columns`` into an upgraded, empty store: ``executemany`` on SQLite, ``COPY`` on
    PostgreSQL (instants as UTC text, which both read as they store them). The secondary
    indexes are dropped for the load and built again after it, in one sort each, as a restore
    does; whatever indexes the migrations made, the store ends up with exactly those."""
    parsed = make_url(url)
    tables = (
        ("cases", CASE_COLUMNS, columns.cases),
        ("case_history", HISTORY_COLUMNS, columns.history),
    )
    names = [name for name, _, _ in tables]
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database
        conn = sqlite3.connect(parsed.database)
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB: the index builds sort in memory
        conn.execute("PRAGMA synchronous = OFF")  # nothing else uses the file while it loads
        conn.execute("PRAGMA journal_mode = MEMORY")  # not WAL: each page is written once
        try:
            marks = ", ".join("?" for _ in names)
            indexes = conn.execute(
                f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({marks})",
                names,
            ).fetchall()
            with conn:
                for index, _ in indexes:
                    conn.execute(f'DROP INDEX "{index}"')
                for name, fields, rows in tables:
                    values = ", ".join("?" for _ in fields)
                    conn.executemany(
                        f"INSERT INTO {name} ({', '.join(fields)}) VALUES ({values})", rows
                    )
                for _, sql in indexes:
                    conn.execute(sql)
            conn.execute("ANALYZE")
            conn.execute("PRAGMA journal_mode = WAL")  # the store's mode (activities/db.py)
        finally:
            conn.close()
        return
    import csv
    import io

    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    pg = await asyncpg.connect(dsn)
    try:
        await pg.execute("SET TIME ZONE 'UTC'")
        await pg.execute("SET maintenance_work_mem = '256MB'")
        # Indexes that back no constraint (the primary keys stay).
        indexes = await pg.fetch(
            "SELECT indexname, indexdef FROM pg_indexes i WHERE tablename = ANY($1) AND NOT "
            "EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
            names,
        )
        async with pg.transaction():
            for index in indexes:
                await pg.execute(f'DROP INDEX "{index["indexname"]}"')
            for name, fields, rows in tables:
                buffer = io.StringIO()
                csv.writer(buffer).writerows(rows)
                data = io.BytesIO(buffer.getvalue().encode())
                await pg.copy_to_table(name, source=data, columns=list(fields), format="csv")
            for index in indexes:
                await pg.execute(index["indexdef"])
        await pg.execute("ANALYZE")
    finally:
        await pg.close()
