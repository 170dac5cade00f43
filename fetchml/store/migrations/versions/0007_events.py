"""events: the live feed's replay window; queue_counts: queued tasks per priority

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fetchml.store.types import UTCDateTime

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", BIGINT_PK, autoincrement=False, nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "queue_counts",
        sa.Column("priority", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("priority"),
    )
    op.execute(
        "INSERT INTO queue_counts (priority, queued) "
        "SELECT priority, count(*) FROM tasks WHERE status = 'queued' GROUP BY priority"
    )


def downgrade() -> None:
    op.drop_table("queue_counts")
    op.drop_table("events")
