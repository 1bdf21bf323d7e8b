"""Outbox: the mail relay's columns. ``seq`` is the case's step that sent a message (a case's
mail goes out in order); ``next_attempt_at`` is when the relay may try it next (a retry's back
off, or the lease of the relay sending it now); a partial index finds the messages not yet sent.
``run_id``, ``task_id`` and ``task_at`` name the workflow task that recorded a message, and
``confirmed_at`` when the relay found that task completed in history (only then does it send).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNSENT = sa.text("sent_at IS NULL AND undelivered_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("run_id", sa.String(64)))
        batch.add_column(sa.Column("task_id", sa.Integer))
        batch.add_column(sa.Column("task_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["created_at"],
        postgresql_where=UNSENT,
        sqlite_where=UNSENT,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_unsent", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        for column in ("confirmed_at", "task_at", "task_id", "run_id"):
            batch.drop_column(column)
        batch.drop_column("next_attempt_at")
        batch.drop_column("seq")
