"""Policy changes of open cases, and the instant a deadline's move was due.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("case_history") as batch:
        batch.add_column(sa.Column("due", sa.DateTime(timezone=True)))
    op.create_table(
        "policy_changes",
        sa.Column("case_number", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_role", sa.String(32), nullable=False),
        sa.Column("actor_name", sa.String(200), nullable=False),
        sa.Column("actor_institution", sa.String(200)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("changes", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("case_number", "seq", name="pk_policy_changes"),
    )


def downgrade() -> None:
    op.drop_table("policy_changes")
    with op.batch_alter_table("case_history") as batch:
        batch.drop_column("due")
