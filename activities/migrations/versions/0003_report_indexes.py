"""Indexes for ``python -m starter report``: history rows by instant (stays, reopenings,
closings in a period), cases by status and since when (deadlines ahead), by opening and closing
(the backlog), outbox messages by creation (emails in a period).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_case_history_at", "case_history", ["at"]),
    # Covering: reopenings (left Closing, for where) and closings (by whom) in a period.
    ("ix_case_history_from_at", "case_history", ["from_status", "at", "to_status"]),
    ("ix_case_history_to_at", "case_history", ["to_status", "at", "actor_role"]),
    ("ix_cases_status_since", "cases", ["status", "status_since"]),
    ("ix_cases_opened_at", "cases", ["opened_at"]),
    ("ix_cases_closed_at", "cases", ["closed_at"]),
    ("ix_outbox_created_at", "outbox", ["created_at"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
