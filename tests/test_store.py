"""The case store on SQLite and PostgreSQL: migrations, idempotent upserts, UTC instants."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from temporalio.testing import ActivityEnvironment

from activities.case_activities import CaseActivities
from activities.db import async_url, make_engine
from activities.migrate import alembic_config, downgrade, upgrade
from activities.store import CaseStore, OutboxEntry, OutboxMessage, metadata
from settings import Settings
from workflows.contract import Actor, CaseRecord, HistoryRecord, Persist, Record, Status

OPENED = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
TIER1 = Actor(role="tier1", name="Tom One")


@dataclass
class Backend:
    name: str
    url: str  # a database shared by the tests of this backend
    fresh: Callable[[], Awaitable[str]]  # a new, empty database


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        counter = iter(range(1000))

        async def fresh_sqlite() -> str:
            # Nested directories that do not exist yet: the store must create them.
            return f"sqlite:///{tmp_path / f'fresh{next(counter)}' / 'data' / 'cases.db'}"

        return Backend("sqlite", f"sqlite:///{tmp_path / 'cases.db'}", fresh_sqlite)
    databases = request.getfixturevalue("postgres_databases")
    return Backend("postgresql", request.getfixturevalue("postgres_url"), databases.create)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[CaseStore]:
    await upgrade(backend.url)
    store = CaseStore(backend.url)
    yield store
    await store.dispose()


def case_number() -> str:
    return f"T-{uuid.uuid4().hex[:12]}"


def write(
    number: str,
    seq: int,
    status: Status = Status.TIER1_ANALYSIS,
    *,
    at: datetime | None = None,
    note: str | None = None,
) -> Persist:
    at = at or OPENED + timedelta(hours=seq)
    record = CaseRecord(
        case_number=number,
        institution="Alma University",
        product="Alma",
        priority="normal",
        title="Loans report shows wrong totals",
        contact_email="ann@alma.example",
        status=status,
        status_since=at,
        owner_tier=1,
        release_id=None,
        opened_at=OPENED,
        closed_at=None,
        references="C-0001",
        seq=seq,
    )
    history = HistoryRecord(
        case_number=number,
        seq=seq,
        from_status=Status.NEW,
        to_status=status,
        at=at,
        actor=TIER1,
        note=note,
    )
    return Persist(key=f"case-{number}:{seq}:persist", case=record, history=history)


# ---- migrations -----------------------------------------------------------------------------


def _schema_report(conn: Connection) -> tuple[set[str], str | None, list[object]]:
    tables = set(inspect(conn).get_table_names())
    version = MigrationContext.configure(conn).get_current_revision()
    drift = compare_metadata(MigrationContext.configure(conn), metadata)
    return tables, version, drift


async def test_migrations_build_the_schema_on_an_empty_database(backend: Backend) -> None:
    url = await backend.fresh()
    await upgrade(url)
    await upgrade(url)  # a second run (every worker start) is a no-op

    engine = make_engine(url, pooled=False)
    try:
        async with engine.connect() as conn:
            tables, version, drift = await conn.run_sync(_schema_report)
    finally:
        await engine.dispose()
    assert {"cases", "case_history", "outbox", "release_backlog", "alembic_version"} <= tables
    # The newest migration (ids are re-chained as branches merge, so not a literal here).
    assert version == ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    # The tables the store writes through are exactly the ones the migrations create.
    assert drift == []


async def test_a_message_waiting_in_a_first_version_outbox_survives_the_upgrade(
    backend: Backend,
) -> None:
    url = await backend.fresh()
    await upgrade(url, "0001")
    engine = make_engine(url, pooled=False)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outbox (key, case_number, template, recipient, subject, body, "
                    "message_id, created_at, attempts) VALUES ('k1', 'C-1', 'closing', "
                    "'ann@alma.example', 'Closing', 'Body', '<k1@support-cases>', :at, 3)"
                ),
                {"at": datetime(2026, 11, 1, tzinfo=UTC)},
            )
    finally:
        await engine.dispose()
    await upgrade(url)
    store = CaseStore(url)
    try:
        entry = await store.outbox_entry("k1")
    finally:
        await store.dispose()
    assert entry is not None and entry.sent_at is None and entry.attempts == 3
    assert (entry.in_doubt, entry.resent_in_doubt) == (False, 0)


async def test_migrations_downgrade_and_upgrade_again(backend: Backend) -> None:
    url = await backend.fresh()
    await upgrade(url)
    await downgrade(url, "base")
    await upgrade(url)
    store = CaseStore(url)
    try:
        number = case_number()
        await store.save_case(write(number, 1))
        assert (await store.get_case(number)) is not None
    finally:
        await store.dispose()


# ---- cases and history ----------------------------------------------------------------------


async def test_a_write_is_stored_and_read_back(store: CaseStore) -> None:
    number = case_number()
    persist = write(number, 1, note="picked up")
    await store.save_case(persist)

    assert await store.get_case(number) == persist.case
    assert await store.history(number) == [persist.history]
    assert await store.get_case("T-does-not-exist") is None


async def test_a_retried_write_changes_nothing_and_adds_one_history_row(store: CaseStore) -> None:
    number = case_number()
    persist = write(number, 1, note="first attempt")
    for _ in range(3):
        await store.save_case(persist)

    history = await store.history(number)
    assert [(h.seq, h.note) for h in history] == [(1, "first attempt")]
    assert (await store.get_case(number)) == persist.case


async def test_a_step_redone_later_replaces_its_row_and_an_earlier_one_never_does(
    store: CaseStore,
) -> None:
    """A worker died in the workflow task after its record was written; the task ran again on
    another worker, later: the case's history holds the redone step, and so does the store."""
    number = case_number()
    first = write(number, 1, note="the dead worker's attempt")
    redone = write(number, 1, at=first.case.status_since + timedelta(seconds=10), note="redone")
    await store.save_case(first)
    await store.save_case(redone)
    await store.save_case(first)  # a stale write arriving late changes nothing

    [row] = await store.history(number)
    assert (row.note, row.at) == ("redone", redone.history.at)  # type: ignore[union-attr]
    assert (await store.get_case(number)) == redone.case


async def test_an_older_write_never_overwrites_a_newer_one(store: CaseStore) -> None:
    number = case_number()
    await store.save_case(write(number, 3, Status.PENDING_CUSTOMER_RESPONSE))
    await store.save_case(write(number, 2, Status.TIER1_ANALYSIS))  # delivered late

    case = await store.get_case(number)
    assert case is not None
    assert (case.seq, case.status) == (3, Status.PENDING_CUSTOMER_RESPONSE)
    # The late write's status change did happen, so its history row is kept.
    assert [h.seq for h in await store.history(number)] == [2, 3]


async def test_concurrent_writes_in_any_order_converge_on_the_newest(store: CaseStore) -> None:
    number = case_number()
    writes = [write(number, seq, note=f"change {seq}") for seq in range(1, 21)]
    random.Random(7).shuffle(writes)
    # Twice each, all at once: retries racing the originals across the connection pool.
    await asyncio.gather(*(store.save_case(w) for w in writes + writes))

    case = await store.get_case(number)
    assert case is not None and case.seq == 20
    assert [h.seq for h in await store.history(number)] == list(range(1, 21))


async def test_instants_round_trip_as_utc_aware(store: CaseStore) -> None:
    number = case_number()
    # Written with another offset; read back as the same instant, in UTC.
    local = datetime(2026, 7, 4, 23, 45, 1, 987654, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    persist = write(number, 1, at=local)
    closed = persist.case.model_copy(update={"closed_at": local + timedelta(days=3)})
    await store.save_case(persist.model_copy(update={"case": closed}))

    case = await store.get_case(number)
    [entry] = await store.history(number)
    assert case is not None
    for instant in (case.status_since, case.opened_at, case.closed_at, entry.at):
        assert instant is not None and instant.utcoffset() == timedelta(0)
    assert case.status_since == local and entry.at == local
    assert case.status_since.hour == 18 and case.status_since.microsecond == 987654
    assert case.closed_at == local + timedelta(days=3)


async def test_the_record_activity_writes_through_the_store(store: CaseStore) -> None:
    number = case_number()
    persist = write(number, 1)
    activity = CaseActivities(store, None, Settings()).record
    await ActivityEnvironment().run(activity, Record(effects=[persist]))
    await ActivityEnvironment().run(activity, Record(effects=[persist]))  # a retry
    assert await store.get_case(number) == persist.case
    assert len(await store.history(number)) == 1


async def test_an_opening_record_claims_the_number_or_writes_nothing(store: CaseStore) -> None:
    number = case_number()
    activity = CaseActivities(store, None, Settings()).record
    first = Record(effects=[write(number, 1)], claim="run-1")
    assert (await ActivityEnvironment().run(activity, first)).owner == "run-1"
    assert (await ActivityEnvironment().run(activity, first)).owner == "run-1"  # a retry
    # Another run opening the same number: refused, and the first case's rows unchanged.
    later = write(number, 7).model_copy(update={"key": "other"})
    again = Record(effects=[later], claim="run-2")
    assert (await ActivityEnvironment().run(activity, again)).owner == "run-1"
    stored = await store.get_case(number)
    assert stored is not None and stored.seq == 1
    assert [row.seq for row in await store.history(number)] == [1]


# ---- outbox ---------------------------------------------------------------------------------


async def test_the_outbox_keeps_the_first_recording_of_a_key(store: CaseStore) -> None:
    number = case_number()
    first = OutboxMessage(
        key=f"case-{number}:4:notify:reminder",
        case_number=number,
        template="reminder",
        recipient="ann@alma.example",
        subject="first",
        body="first body",
        message_id=f"<case-{number}.4.notify.reminder@support-cases>",
        seq=4,
    )
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    entry = await store.outbox_add(first, at)
    again = await store.outbox_add(
        OutboxMessage(**{**vars(first), "subject": "second"}), at + timedelta(minutes=5)
    )
    assert again == entry
    assert (entry.subject, entry.created_at, entry.attempts, entry.sent_at) == (
        "first",
        at,
        0,
        None,
    )

    await store.outbox_failed(first.key, "SMTPConnectError: refused")
    await store.outbox_sent(first.key, at + timedelta(minutes=1))
    await store.outbox_sent(first.key, at + timedelta(minutes=2))  # a late duplicate
    stored = await store.outbox_entry(first.key)
    assert stored is not None
    assert stored.sent_at == at + timedelta(minutes=1)
    assert (stored.attempts, stored.last_error) == (2, None)
    assert await store.outbox(number) == [stored]
    assert await store.outbox(number, pending_only=True) == []


async def test_a_message_waits_for_the_task_that_recorded_it_last(store: CaseStore) -> None:
    """A lost workflow task's retry that decides the same message records it again: the message
    then waits for the retry's task, and dropping the lost task's messages leaves it; once
    confirmed, its task never moves. A lost task's message that nobody recorded again goes."""
    number = case_number()
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def message(seq: int, task: int) -> OutboxMessage:
        return OutboxMessage(
            key=f"case-{number}:run-1:{seq}:notify:reminder",
            case_number=number,
            template="reminder",
            recipient="ann@alma.example",
            subject=f"task {task}",
            body="body",
            message_id=f"<case-{number}.run-1.{seq}.notify.reminder@support-cases>",
            seq=seq,
            run_id="run-1",
            task_id=task,
            task_at=at + timedelta(seconds=task),
        )

    async def stored(seq: int) -> OutboxEntry | None:
        return await store.outbox_entry(message(seq, 0).key)

    await store.record([], [message(4, 10)], at=at)
    lost = await stored(4)
    assert lost is not None and lost.unconfirmed and lost.task_id == 10
    await store.record([], [message(4, 14)], at=at + timedelta(seconds=5))  # the retry
    retried = await stored(4)
    assert retried is not None and (retried.task_id, retried.subject) == (14, "task 10")
    assert retried.created_at == at  # the first recording's words and instant stay
    assert await store.outbox_void(lost) == 0  # recorded again since: it waits for task 14

    await store.outbox_confirm(retried, at + timedelta(seconds=6))
    await store.record([], [message(4, 20)], at=at + timedelta(seconds=7))
    kept = await stored(4)
    assert kept is not None and not kept.unconfirmed and kept.task_id == 14
    assert await store.outbox_void(retried) == 0  # confirmed: never dropped

    await store.record([], [message(5, 30)], at=at + timedelta(seconds=8))
    orphan = await stored(5)
    assert orphan is not None and orphan.unconfirmed
    assert await store.outbox_void(orphan) == 1
    assert await stored(5) is None


# ---- URLs and engines -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///.data/cases.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///cases.db", "sqlite+aiosqlite"),
        ("postgresql://u:p%40ss@db:5432/cases", "postgresql+asyncpg"),
        ("postgres://u@db/cases", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@db/cases", "postgresql+asyncpg"),
    ],
)
def test_urls_get_an_async_driver(given: str, driver: str) -> None:
    url = async_url(given)
    assert url.drivername == driver
    assert url.password in (None, "p@ss")  # credentials survive the rewrite


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'cases.db'}")
    try:
        async with engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
    finally:
        await engine.dispose()
    assert (mode, timeout) == ("wal", 10_000)


async def test_a_case_number_is_claimed_by_the_run_that_opened_it(store: CaseStore) -> None:
    number = case_number()
    first = write(number, 1)
    assert await store.claim(first.case, "run-a") == "run-a"
    assert await store.claim(first.case, "run-a") == "run-a"  # a retry: still granted
    assert await store.claim(first.case, "run-b") == "run-a"  # another run: refused
    await store.save_case(write(number, 2))
    assert await store.claim(first.case, "run-b") == "run-a"  # persists keep the owner
    stored = await store.get_case(number)
    assert stored is not None and stored.seq == 2


async def test_a_release_backlog_reads_back_in_order_and_a_retried_write_adds_nothing(
    store: CaseStore,
) -> None:
    release = case_number()
    await store.backlog_add(release, 0, ["c", "a", "b"])
    await store.backlog_add(release, 0, ["c", "a", "b"])  # the activity retried
    await store.backlog_add(release, 1, ["d"])
    assert await store.backlog(release, 0) == ["c", "a", "b"]
    assert await store.backlog(release, 1) == ["d"]
    assert await store.backlog(release, 2) == []
