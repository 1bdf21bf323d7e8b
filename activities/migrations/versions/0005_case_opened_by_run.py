"""Cases: which workflow run opened the case number (``opened_by_run``), so that a later start
of ``case-<n>`` by another run is refused before it sends or writes anything. Releases: the
registrations a release keeps out of its carried state (``release_backlog``), in chunks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("opened_by_run", sa.String(64)))
    op.create_table(
        "release_backlog",
        sa.Column("release_id", sa.String(64), nullable=False),
        sa.Column("chunk", sa.Integer, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("case_number", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("release_id", "chunk", "position", name="pk_release_backlog"),
    )


def downgrade() -> None:
    op.drop_table("release_backlog")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("opened_by_run")
