"""``python -m starter history CASE``: the full record of one case from the case store, for audits
and for cases whose workflow history is long gone.

The record is a list of sections, one per kind of entry (status changes, emails, ...). A section
whose table this store lacks is absent and named in ``missing``; a new kind of entry is a new
``Section`` in ``SECTIONS``, and the CSV gains its columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Select, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from activities.store import case_history, cases, outbox, policy_changes


class Entry(BaseModel):
    """One line of a case's record: what kind, when, and the kind's own fields."""

    kind: str
    at: datetime
    fields: dict[str, Any]


class CaseHistory(BaseModel):
    case_number: str
    case: dict[str, Any] | None
    entries: list[Entry]
    missing: list[str]  # sections this store does not record


@dataclass(frozen=True)
class Section:
    kind: str
    table: str
    columns: tuple[str, ...]  # the fields of an entry, in CSV order
    at: str  # the column that orders the record
    query: Callable[[str], Select[Any]]


def _status_changes(number: str) -> Select[Any]:
    h = case_history.c
    return (
        select(
            h.at,
            h.seq,
            h.from_status,
            h.to_status,
            h.actor_role,
            h.actor_name,
            h.actor_institution,
            h.note,
            h.due,
        )
        .where(h.case_number == number)
        .order_by(h.seq)
    )


def _emails(number: str) -> Select[Any]:
    o = outbox.c
    return (
        select(
            o.created_at,
            o.template,
            o.recipient,
            o.subject,
            o.sent_at,
            o.attempts,
            o.last_error,
            o.message_id,
        )
        .where(o.case_number == number)
        .order_by(o.created_at, o.key)
    )


def _policy_changes(number: str) -> Select[Any]:
    p = policy_changes.c
    return (
        select(p.at, p.seq, p.actor_role, p.actor_name, p.actor_institution, p.reason, p.changes)
        .where(p.case_number == number)
        .order_by(p.seq)
    )


SECTIONS = (
    Section(
        "status_change",
        "case_history",
        (
            "seq",
            "from_status",
            "to_status",
            "actor_role",
            "actor_name",
            "actor_institution",
            "note",
            "due",
        ),
        "at",
        _status_changes,
    ),
    Section(
        "email",
        "outbox",
        ("template", "recipient", "subject", "sent_at", "attempts", "last_error", "message_id"),
        "created_at",
        _emails,
    ),
    Section(
        "policy_change",
        "policy_changes",
        ("seq", "actor_role", "actor_name", "actor_institution", "reason", "changes"),
        "at",
        _policy_changes,
    ),
)

CSV_COLUMNS = ("kind", "at", *dict.fromkeys(c for s in SECTIONS for c in s.columns))


def _tables(sync: Connection) -> dict[str, set[str]]:
    inspector = inspect(sync)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


async def case_history_of(engine: AsyncEngine, number: str) -> CaseHistory:
    async with engine.connect() as conn:
        tables = await conn.run_sync(_tables)
        row = (
            (await conn.execute(select(cases).where(cases.c.case_number == number)))
            .mappings()
            .first()
        )
        entries: list[Entry] = []
        missing: list[str] = []
        for section in SECTIONS:
            wanted = {"case_number", section.at, *section.columns}
            if not wanted <= tables.get(section.table, set()):
                missing.append(section.kind)
                continue
            for found in (await conn.execute(section.query(number))).mappings():
                fields = {c: found[c] for c in section.columns}
                entries.append(Entry(kind=section.kind, at=found[section.at], fields=fields))
    # Stable: a section's own order (a status change's seq) holds among equal instants.
    entries.sort(key=lambda e: e.at)
    case = None if row is None else {k: v for k, v in row.items()}
    return CaseHistory(case_number=number, case=case, entries=entries, missing=missing)


def csv_rows(record: CaseHistory) -> list[dict[str, Any]]:
    """One dict per entry with every CSV column (empty where the kind has no such field)."""
    rows = []
    for entry in record.entries:
        row: dict[str, Any] = dict.fromkeys(CSV_COLUMNS, "")
        row["kind"], row["at"] = entry.kind, entry.at.isoformat()
        for name, value in entry.fields.items():
            if value is None:
                continue
            row[name] = value.isoformat() if isinstance(value, datetime) else value
        rows.append(row)
    return rows
