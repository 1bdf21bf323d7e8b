"""The case store: cases, their status history, the outbox of notifications.

Revision ID: 0001
Revises:
Create Date: 2025-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Frozen here rather than imported from the store: a migration must keep meaning what it meant
# when it was written, whatever the tables look like later.
def _instant() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("case_number", sa.String(64), primary_key=True),
        sa.Column("institution", sa.String(200), nullable=False),
        sa.Column("product", sa.String(200), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("contact_email", sa.String(254), nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("status_since", _instant(), nullable=False),
        sa.Column("owner_tier", sa.Integer, nullable=False),
        sa.Column("release_id", sa.String(64)),
        sa.Column("opened_at", _instant(), nullable=False),
        sa.Column("closed_at", _instant()),
        sa.Column("case_references", sa.String(64)),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("updated_at", _instant(), nullable=False),
    )
    op.create_index("ix_cases_status", "cases", ["status"])

    op.create_table(
        "case_history",
        sa.Column("case_number", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("from_status", sa.String(40)),
        sa.Column("to_status", sa.String(40), nullable=False),
        sa.Column("at", _instant(), nullable=False),
        sa.Column("actor_role", sa.String(32), nullable=False),
        sa.Column("actor_name", sa.String(200), nullable=False),
        sa.Column("actor_institution", sa.String(200)),
        sa.Column("note", sa.Text),
        sa.PrimaryKeyConstraint("case_number", "seq", name="pk_case_history"),
    )

    op.create_table(
        "outbox",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("case_number", sa.String(64), nullable=False),
        sa.Column("template", sa.String(40), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(300), nullable=False),
        sa.Column("created_at", _instant(), nullable=False),
        sa.Column("sent_at", _instant()),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_outbox_case_number", "outbox", ["case_number"])


def downgrade() -> None:
    op.drop_index("ix_outbox_case_number", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("case_history")
    op.drop_index("ix_cases_status", table_name="cases")
    op.drop_table("cases")
