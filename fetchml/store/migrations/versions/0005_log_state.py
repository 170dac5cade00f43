"""task_log_state: where each attempt's log stands (O(1) appends, the per-task log quota)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_log_state",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("next_line", sa.Integer(), nullable=False),
        sa.Column("stored_lines", sa.Integer(), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
        sa.Column("dropped_lines", sa.Integer(), nullable=False),
        sa.Column("notice_line", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("task_id", "attempt"),
    )
    # Logs written before this revision: one counting pass now, never again per append.
    op.execute(
        "INSERT INTO task_log_state "
        "(task_id, attempt, next_line, stored_lines, stored_bytes, dropped_lines, notice_line) "
        "SELECT task_id, attempt, MAX(line_no) + 1, COUNT(*), COALESCE(SUM(LENGTH(line)), 0), 0, NULL "
        "FROM task_logs GROUP BY task_id, attempt"
    )


def downgrade() -> None:
    op.drop_table("task_log_state")
