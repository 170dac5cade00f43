"""time limits: tasks.time_limit_minutes, jupyter_services.time_limit_minutes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: rows from before have no limit.
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_limit_minutes", sa.Integer(), nullable=True))
    with op.batch_alter_table("jupyter_services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_limit_minutes", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jupyter_services", schema=None) as batch_op:
        batch_op.drop_column("time_limit_minutes")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("time_limit_minutes")
