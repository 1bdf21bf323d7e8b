"""The case store: the relational record of every case, its status history and its outbox.

The workflow is the source of truth; this store is its durable, queryable mirror. Every write is
an idempotent upsert keyed by what the workflow sent, so activity retries, replays and writes
that arrive out of order all converge on the newest state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from activities.db import make_engine, sync_sqlite_engine
from workflows.contract import (
    Actor,
    CaseRecord,
    HistoryRecord,
    Persist,
    PolicyChangeRecord,
    PolicyFieldChange,
)


class UtcDateTime(TypeDecorator[datetime]):
    """An instant stored in UTC and always read back timezone-aware.

    SQLite has no timezone type and hands back naive values; storing UTC and re-attaching it
    on read keeps both databases returning the same aware instants (and SQLite's text
    ordering correct).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the case store only accepts timezone-aware instants")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()
UNSENT = text("sent_at IS NULL AND undelivered_at IS NULL")

cases = Table(
    "cases",
    metadata,
    Column("case_number", String(64), primary_key=True),
    Column("institution", String(200), nullable=False),
    Column("product", String(200), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("title", String(500), nullable=False),
    Column("contact_email", String(254), nullable=False),
    Column("status", String(40), nullable=False),
    Column("status_since", UtcDateTime, nullable=False),
    Column("owner_tier", Integer, nullable=False),
    Column("release_id", String(64)),
    Column("opened_at", UtcDateTime, nullable=False),
    Column("closed_at", UtcDateTime),
    # "references" is an SQL keyword; a plain name spares every hand-written query the quoting.
    Column("case_references", String(64)),
    Column("seq", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # The run that opened the number (``claim_case``): no other run may write or mail for it.
    Column("opened_by_run", String(64)),
    Index("ix_cases_status", "status"),
    # The report's (migration 0003): deadlines ahead, the backlog.
    Index("ix_cases_status_since", "status", "status_since"),
    Index("ix_cases_opened_at", "opened_at"),
    Index("ix_cases_closed_at", "closed_at"),
)

case_history = Table(
    "case_history",
    metadata,
    Column("case_number", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("from_status", String(40)),
    Column("to_status", String(40), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor_role", String(32), nullable=False),
    Column("actor_name", String(200), nullable=False),
    Column("actor_institution", String(200)),
    Column("note", Text),
    # A deadline's move: when it was due (``at`` is when it acted, later after an outage).
    Column("due", UtcDateTime),
    # One row per status change: the workflow's sequence number makes a retried write a no-op.
    PrimaryKeyConstraint("case_number", "seq", name="pk_case_history"),
    # The report's (migration 0003): what happened in a period.
    Index("ix_case_history_at", "at"),
    Index("ix_case_history_from_at", "from_status", "at", "to_status"),
    Index("ix_case_history_to_at", "to_status", "at", "actor_role"),
)

policy_changes = Table(
    "policy_changes",
    metadata,
    Column("case_number", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor_role", String(32), nullable=False),
    Column("actor_name", String(200), nullable=False),
    Column("actor_institution", String(200)),
    Column("reason", Text, nullable=False),
    # [{"field": ..., "old": ..., "new": ...}, ...] as JSON text: read whole, never queried into.
    Column("changes", Text, nullable=False),
    PrimaryKeyConstraint("case_number", "seq", name="pk_policy_changes"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("case_number", String(64), nullable=False),
    Column("template", String(40), nullable=False),
    Column("recipient", String(254), nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("message_id", String(300), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    # Set while an attempt hands the message to the SMTP server: found set by a later attempt,
    # the earlier one died between the server's acceptance and ``sent_at``, and the message may
    # have gone out already.
    Column("handed_at", UtcDateTime),
    Column("resent_in_doubt", Integer, nullable=False, server_default="0"),
    # Set when the mail server refused the message for good, with its answer: never retried.
    Column("undelivered_at", UtcDateTime),
    Column("undelivered_reason", Text),
    # The case's step that sent it: the relay sends a case's messages in this order.
    Column("seq", Integer, nullable=False, server_default="0"),
    # When the relay may try it next: a failed attempt's back-off, or the lease of the relay
    # that is sending it now (renewed while it sends; a relay that died lets it lapse).
    Column("next_attempt_at", UtcDateTime),
    # The workflow task that recorded it (its run, started event and clock): the relay sends it
    # once that task is in history as completed (``confirmed_at``) and drops it if the task was
    # lost, since its retry decided anew. Unset: nothing to wait for.
    Column("run_id", String(64)),
    Column("task_id", Integer),
    Column("task_at", UtcDateTime),
    Column("confirmed_at", UtcDateTime),
    Index("ix_outbox_case_number", "case_number"),
    Index("ix_outbox_created_at", "created_at"),  # the report's (migration 0003)
    # What the relay reads (migration 0007): the messages not yet sent nor refused.
    Index("ix_outbox_unsent", "created_at", postgresql_where=UNSENT, sqlite_where=UNSENT),
)


# Registrations a release keeps out of its carried state: chunk by chunk, each written once
# (a retried write is a no-op by its key), read back in order when the release tells its cases.
release_backlog = Table(
    "release_backlog",
    metadata,
    Column("release_id", String(64), nullable=False),
    Column("chunk", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("case_number", String(64), nullable=False),
    PrimaryKeyConstraint("release_id", "chunk", "position", name="pk_release_backlog"),
)


@dataclass(frozen=True)
class OutboxMessage:
    """A message as first recorded; a retry sends exactly this, even if templates changed."""

    key: str
    case_number: str
    template: str
    recipient: str
    subject: str
    body: str
    message_id: str
    seq: int
    run_id: str | None = field(default=None, kw_only=True)
    task_id: int | None = field(default=None, kw_only=True)
    task_at: datetime | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class OutboxEntry(OutboxMessage):
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    last_error: str | None
    handed_at: datetime | None = None
    resent_in_doubt: int = 0
    undelivered_at: datetime | None = None
    undelivered_reason: str | None = None
    next_attempt_at: datetime | None = None
    confirmed_at: datetime | None = None

    @property
    def unconfirmed(self) -> bool:
        """Recorded by a workflow task not yet known to have completed."""
        return self.run_id is not None and self.confirmed_at is None

    @property
    def in_doubt(self) -> bool:
        """An earlier attempt handed it to the SMTP server and was never heard of again."""
        return self.sent_at is None and self.handed_at is not None and not self.undelivered_at


# An error text long enough to diagnose, short enough that a chatty server cannot bloat the row.
_MAX_ERROR = 2000


class CaseStore:
    """Async access to the case store for the activities, the CLI and tests."""

    def __init__(self, url: str | URL) -> None:
        self.engine = make_engine(url)
        self._postgres = self.engine.dialect.name == "postgresql"
        # A SQLite file's records go through a synchronous engine in a worker thread: one hop
        # per transaction instead of one per statement (half the CPU of a record).
        self._sync = sync_sqlite_engine(url)
        self._build_writes()

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sync is not None:
            self._sync.dispose()

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        # ON CONFLICT is dialect-specific in SQLAlchemy; both supported databases speak it.
        return postgresql.insert(table) if self._postgres else sqlite.insert(table)

    # ---- cases and history ------------------------------------------------------------------

    async def save_case(self, persist: Persist) -> None:
        """Upsert the case row unless a newer one is stored, and add its history row once.

        One transaction, so a reader never sees a status without the change that led to it.
        """
        await self.save_cases([persist])

    async def save_cases(self, batch: Sequence[Persist]) -> None:
        """``save_case`` for each of ``batch``, in one transaction."""
        async with self.engine.begin() as conn:
            for persist in batch:
                await self._save(conn, persist)

    async def _save(self, conn: AsyncConnection, persist: Persist) -> None:
        for statement, parameters in self._writes(persist):
            await conn.execute(statement, parameters)

    def _writes(self, persist: Persist) -> list[tuple[Any, dict[str, Any]]]:
        """The statements that write one step (its case row, its history or policy row), each
        with its parameters; the statements are built once per store."""
        writes = [(self._upsert_case, _case_row(persist.case) | {"updated_at": datetime.now(UTC)})]
        if persist.history is not None:
            writes.append((self._upsert_history, _history_row(persist.history)))
        if persist.policy_change is not None:
            writes.append((self._upsert_policy, _policy_row(persist.policy_change)))
        return writes

    def _build_writes(self) -> None:
        case = self._insert(cases)
        self._upsert_case = case.on_conflict_do_update(
            index_elements=[cases.c.case_number],
            set_={name: case.excluded[name] for name in _CASE_UPDATES},
            # A retry of the same write is harmless; a stale write changes nothing; the same step
            # redone later (see below) wins.
            where=or_(
                cases.c.seq < case.excluded.seq,
                and_(
                    cases.c.seq == case.excluded.seq,
                    cases.c.status_since <= case.excluded.status_since,
                ),
            ),
        )
        # A step's row is written again by a retry (the same row) or by the workflow task that
        # redid the step after its worker died mid-task, at a later instant: the later wins, so
        # the store ends with what the case's history holds.
        history = self._insert(case_history)
        self._upsert_history = history.on_conflict_do_update(
            index_elements=[case_history.c.case_number, case_history.c.seq],
            set_={name: history.excluded[name] for name in _updated(case_history)},
            where=case_history.c.at <= history.excluded.at,
        )
        policy = self._insert(policy_changes)
        self._upsert_policy = policy.on_conflict_do_update(
            index_elements=[policy_changes.c.case_number, policy_changes.c.seq],
            set_={name: policy.excluded[name] for name in _updated(policy_changes)},
            where=policy_changes.c.at <= policy.excluded.at,
        )
        # A message is recorded once by its key. Recorded again before it was confirmed, by the
        # retry of a lost workflow task that decided it too, it waits for that retry instead.
        message = self._insert(outbox)
        self._add_messages = message.on_conflict_do_update(
            index_elements=[outbox.c.key],
            set_={name: message.excluded[name] for name in ("run_id", "task_id", "task_at")},
            where=and_(
                outbox.c.confirmed_at.is_(None),
                outbox.c.sent_at.is_(None),
                outbox.c.undelivered_at.is_(None),
            ),
        )

    def _messages(self, messages: Sequence[OutboxMessage], at: datetime) -> list[dict[str, Any]]:
        return [
            {**vars(m), "created_at": at, "attempts": 0, "resent_in_doubt": 0} for m in messages
        ]

    def _claim_statements(self, case: CaseRecord, run_id: str) -> tuple[Any, Any]:
        row = _case_row(case) | {"updated_at": datetime.now(UTC), "opened_by_run": run_id}
        add = self._insert(cases).values(row).on_conflict_do_nothing()
        owner = select(cases.c.opened_by_run).where(cases.c.case_number == case.case_number)
        return add, owner

    async def record(
        self,
        persists: Sequence[Persist],
        messages: Sequence[OutboxMessage],
        *,
        at: datetime,
        claim: tuple[CaseRecord, str] | None = None,
    ) -> str | None:
        """What decisions of a case ask, in one transaction: its rows (``save_cases``) and its
        messages into the outbox (each once, by key; recorded ``at``). With ``claim`` (the case,
        the opening run), the number is claimed first; held by another run, nothing is written.
        Returns the run that holds the number (None without ``claim``)."""
        if self._sync is not None:
            return await asyncio.to_thread(self._record_here, persists, messages, at, claim)
        async with self.engine.begin() as conn:
            if claim is not None:
                add, query = self._claim_statements(*claim)
                await conn.execute(add)
                owner: str | None = (await conn.execute(query)).scalar_one()
                if owner != claim[1]:
                    return owner
            for persist in persists:
                await self._save(conn, persist)
            if messages:
                await conn.execute(self._add_messages, self._messages(messages, at))
        return None if claim is None else claim[1]

    def _record_here(
        self,
        persists: Sequence[Persist],
        messages: Sequence[OutboxMessage],
        at: datetime,
        claim: tuple[CaseRecord, str] | None,
    ) -> str | None:
        """``record`` in this thread, through the SQLite file's synchronous engine."""
        assert self._sync is not None
        with self._sync.begin() as conn:
            if claim is not None:
                add, query = self._claim_statements(*claim)
                conn.execute(add)
                owner: str | None = conn.execute(query).scalar_one()
                if owner != claim[1]:
                    return owner
            for persist in persists:
                for statement, parameters in self._writes(persist):
                    conn.execute(statement, parameters)
            if messages:
                conn.execute(self._add_messages, self._messages(messages, at))
        return None if claim is None else claim[1]

    async def claim(self, case: CaseRecord, run_id: str) -> str | None:
        """Record ``run_id`` as the run that opened ``case``'s number unless one did already;
        the run that holds the number (None: a case opened before runs were recorded)."""
        add, query = self._claim_statements(case, run_id)
        async with self.engine.begin() as conn:
            await conn.execute(add)
            owner: str | None = (await conn.execute(query)).scalar_one()
        return owner

    async def get_case(self, case_number: str) -> CaseRecord | None:
        async with self.engine.connect() as conn:
            result = await conn.execute(select(cases).where(cases.c.case_number == case_number))
            row = result.mappings().first()
        return None if row is None else _case_record(row)

    async def history(self, case_number: str) -> list[HistoryRecord]:
        query = (
            select(case_history)
            .where(case_history.c.case_number == case_number)
            .order_by(case_history.c.seq)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_history_record(row) for row in rows]

    async def policy_changes(self, case_number: str) -> list[PolicyChangeRecord]:
        query = (
            select(policy_changes)
            .where(policy_changes.c.case_number == case_number)
            .order_by(policy_changes.c.seq)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_policy_record(row) for row in rows]

    # ---- release backlog --------------------------------------------------------------------

    async def backlog_add(self, release_id: str, chunk: int, case_numbers: Sequence[str]) -> None:
        rows = [
            {"release_id": release_id, "chunk": chunk, "position": i, "case_number": n}
            for i, n in enumerate(case_numbers)
        ]
        if not rows:
            return
        async with self.engine.begin() as conn:
            for start in range(0, len(rows), 5_000):  # within every driver's parameter limit
                add = self._insert(release_backlog).values(rows[start : start + 5_000])
                await conn.execute(add.on_conflict_do_nothing())

    async def backlog(self, release_id: str, chunk: int) -> list[str]:
        query = (
            select(release_backlog.c.case_number)
            .where(release_backlog.c.release_id == release_id, release_backlog.c.chunk == chunk)
            .order_by(release_backlog.c.position)
        )
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    # ---- outbox -----------------------------------------------------------------------------

    async def outbox_add(self, message: OutboxMessage, at: datetime) -> OutboxEntry:
        """Record ``message`` unless its key is already there; return what is stored."""
        row = {**vars(message), "created_at": at, "attempts": 0, "resent_in_doubt": 0}
        add = self._insert(outbox).values(row).on_conflict_do_nothing()
        async with self.engine.begin() as conn:
            await conn.execute(add)
            stored = (
                (await conn.execute(select(outbox).where(outbox.c.key == message.key)))
                .mappings()
                .one()
            )
        return OutboxEntry(**stored)

    async def outbox_entry(self, key: str) -> OutboxEntry | None:
        async with self.engine.connect() as conn:
            result = await conn.execute(select(outbox).where(outbox.c.key == key))
            row = result.mappings().first()
        return None if row is None else OutboxEntry(**row)

    async def outbox(
        self, case_number: str | None = None, *, pending_only: bool = False
    ) -> list[OutboxEntry]:
        query = select(outbox).order_by(outbox.c.created_at, outbox.c.key)
        if case_number is not None:
            query = query.where(outbox.c.case_number == case_number)
        if pending_only:
            query = query.where(outbox.c.sent_at.is_(None), outbox.c.undelivered_at.is_(None))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [OutboxEntry(**row) for row in rows]

    async def outbox_sent(self, key: str, at: datetime) -> None:
        # Guarded by "not sent yet" so a late duplicate cannot move the first send's instant.
        await self._outbox_update(
            update(outbox)
            .where(outbox.c.key == key, outbox.c.sent_at.is_(None))
            .values(
                sent_at=at, attempts=outbox.c.attempts + 1, last_error=None, next_attempt_at=None
            )
        )

    async def outbox_failed(self, key: str, error: str, retry_at: datetime | None = None) -> None:
        """An attempt that failed for now: counted, its error kept, tried again at ``retry_at``."""
        await self._outbox_update(
            update(outbox)
            .where(outbox.c.key == key)
            # The server refused it or was never reached: not in doubt.
            .values(
                attempts=outbox.c.attempts + 1,
                last_error=error[:_MAX_ERROR],
                handed_at=None,
                next_attempt_at=retry_at,
            )
        )

    # ---- the mail relay's view of the outbox -------------------------------------------------

    async def outbox_heads(self, limit: int) -> list[OutboxEntry]:
        """Each case's next message to send (its oldest not yet sent nor refused for good, by
        step), for at most ``limit`` cases, the soonest due first."""
        order = (outbox.c.created_at, outbox.c.seq, outbox.c.key)
        rank = func.row_number().over(partition_by=outbox.c.case_number, order_by=order)
        unsent = (
            select(outbox, rank.label("rank"))
            .where(outbox.c.sent_at.is_(None), outbox.c.undelivered_at.is_(None))
            .subquery()
        )
        due = func.coalesce(unsent.c.next_attempt_at, unsent.c.created_at)
        query = (
            select(*(unsent.c[c.name] for c in outbox.columns))
            .where(unsent.c.rank == 1)
            .order_by(due, unsent.c.key)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [OutboxEntry(**row) for row in rows]

    async def outbox_take(self, key: str, now: datetime, until: datetime) -> bool:
        """Lease the message to the caller until ``until`` if it is due (no other relay holds
        it, its back-off has passed); True if the caller got it."""
        statement = (
            update(outbox)
            .where(
                outbox.c.key == key,
                outbox.c.sent_at.is_(None),
                outbox.c.undelivered_at.is_(None),
                or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
            )
            .values(next_attempt_at=until)
        )
        async with self.engine.begin() as conn:
            taken: int = (await conn.execute(statement)).rowcount
        return taken == 1

    async def outbox_confirm(self, entry: OutboxEntry, at: datetime) -> None:
        """The workflow task that recorded ``entry`` completed: its messages may go."""
        await self._outbox_update(
            update(outbox).where(*self._recorded_by(entry)).values(confirmed_at=at)
        )

    async def outbox_void(self, entry: OutboxEntry) -> int:
        """The workflow task that recorded ``entry`` was lost: delete its unsent messages unless
        a later task recorded them again meanwhile; how many went."""
        statement = delete(outbox).where(*self._recorded_by(entry), outbox.c.sent_at.is_(None))
        async with self.engine.begin() as conn:
            gone: int = (await conn.execute(statement)).rowcount
        return gone

    @staticmethod
    def _recorded_by(entry: OutboxEntry) -> list[Any]:
        """The unconfirmed messages of ``entry``'s case that its workflow task recorded."""
        return [
            outbox.c.case_number == entry.case_number,
            outbox.c.run_id == entry.run_id,
            outbox.c.task_id == entry.task_id,
            outbox.c.confirmed_at.is_(None),
        ]

    async def outbox_lease(self, key: str, until: datetime) -> None:
        """Keep the lease of a message being sent until ``until``."""
        await self._outbox_update(
            update(outbox)
            .where(outbox.c.key == key, outbox.c.sent_at.is_(None))
            .values(next_attempt_at=until)
        )

    async def outbox_undelivered(self, key: str, at: datetime, reason: str) -> None:
        """The mail server refused the message for good: record its answer; never sent again."""
        await self._outbox_update(
            update(outbox)
            .where(outbox.c.key == key, outbox.c.sent_at.is_(None))
            .values(
                undelivered_at=at,
                undelivered_reason=reason[:_MAX_ERROR],
                attempts=outbox.c.attempts + 1,
                last_error=reason[:_MAX_ERROR],
                handed_at=None,
            )
        )

    async def outbox_handing(self, key: str, at: datetime, *, in_doubt: bool) -> None:
        """Record that an attempt is handing the message to the SMTP server now; ``in_doubt``
        counts a resend after an attempt that died mid-hand-over."""
        resent = outbox.c.resent_in_doubt + (1 if in_doubt else 0)
        await self._outbox_update(
            update(outbox)
            .where(outbox.c.key == key, outbox.c.sent_at.is_(None))
            .values(handed_at=at, resent_in_doubt=resent)
        )

    async def _outbox_update(self, statement: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(statement)


# What an upsert of a row replaces: everything but its key (and the case's opening run).
_CASE_UPDATES = [c.name for c in cases.columns if c.name not in ("case_number", "opened_by_run")]


def _updated(table: Table) -> list[str]:
    return [c.name for c in table.columns if c.name not in ("case_number", "seq")]


def _case_row(case: CaseRecord) -> dict[str, Any]:
    row = case.model_dump(exclude={"references"})
    row["case_references"] = case.references
    row["priority"], row["status"] = str(case.priority), str(case.status)
    return row


def _case_record(row: Any) -> CaseRecord:
    data = dict(row)
    data["references"] = data.pop("case_references")
    data.pop("updated_at")
    data.pop("opened_by_run", None)
    return CaseRecord.model_validate(data)


def _history_row(entry: HistoryRecord) -> dict[str, Any]:
    return {
        "case_number": entry.case_number,
        "seq": entry.seq,
        "from_status": None if entry.from_status is None else str(entry.from_status),
        "to_status": str(entry.to_status),
        "at": entry.at,
        "actor_role": str(entry.actor.role),
        "actor_name": entry.actor.name,
        "actor_institution": entry.actor.institution,
        "note": entry.note,
        "due": entry.due,
    }


def _policy_row(change: PolicyChangeRecord) -> dict[str, Any]:
    return {
        "case_number": change.case_number,
        "seq": change.seq,
        "at": change.at,
        "actor_role": str(change.actor.role),
        "actor_name": change.actor.name,
        "actor_institution": change.actor.institution,
        "reason": change.reason,
        "changes": json.dumps([c.model_dump() for c in change.changes]),
    }


def _policy_record(row: Any) -> PolicyChangeRecord:
    return PolicyChangeRecord(
        case_number=row["case_number"],
        seq=row["seq"],
        at=row["at"],
        actor=_actor(row),
        reason=row["reason"],
        changes=[PolicyFieldChange.model_validate(c) for c in json.loads(row["changes"])],
    )


def _actor(row: Any) -> Actor:
    return Actor(
        role=row["actor_role"], name=row["actor_name"], institution=row["actor_institution"]
    )


def _history_record(row: Any) -> HistoryRecord:
    return HistoryRecord(
        case_number=row["case_number"],
        seq=row["seq"],
        from_status=row["from_status"],
        to_status=row["to_status"],
        at=row["at"],
        actor=_actor(row),
        note=row["note"],
        due=row["due"],
    )
