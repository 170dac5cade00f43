"""security: worker keys bound to one worker name, snapshot ownership and sharing

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fetchml.store.types import UTCDateTime

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker_name", sa.String(length=64), nullable=True))
    # Snapshots are content-addressed: two users uploading the same bytes both own the digest.
    op.create_table(
        "snapshot_owners",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("digest", "user_id"),
    )
    op.create_table(
        "snapshot_shares",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("shared_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )


def downgrade() -> None:
    op.drop_table("snapshot_shares")
    op.drop_table("snapshot_owners")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("worker_name")
