"""Outbox: when the mail server refused a message for good, and its answer (the case's other
messages go on; the message is not retried).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("undelivered_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("undelivered_reason", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("undelivered_reason")
        batch.drop_column("undelivered_at")
