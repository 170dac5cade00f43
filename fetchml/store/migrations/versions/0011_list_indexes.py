"""list indexes: task and audit listings at scale; audit_blocks, the audit log's zone map

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 12:00:00

Tasks: (user_id, status, seq) answers a user's tasks of one status, count and page, from the
index alone; (seq) is a narrow copy of the table's order, so a deep offset walks it instead of
the table's rows (SQLite; PostgreSQL's primary key index already is one).

Audit events: (user_id, sequence_num, event_type, timestamp) replaces (user_id): a user's
events in sequence order with every other filter in the index, for pages; (user_id,
event_type, timestamp) counts them, each type a range. (timestamp) goes: time ranges are
answered through audit_blocks instead.

audit_blocks holds, per block of 4096 sequence numbers and event type, how many events there
are and the bounds of their timestamps. Triggers keep it exact under every insert, update and
delete of audit_events (the server's, and anyone's editing the table), so list totals are
sums over blocks plus exact counts in the few blocks a time bound cuts through. The bounds
only ever widen (a delete leaves them): a block judged wholly inside or outside a range is.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from fetchml.store.types import UTCDateTime

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# fetchml.services.auditquery.BLOCK: the two must agree (tests/store/test_audit_blocks.py).
BLOCK = 4096

_SQLITE_UPSERT = (
    "INSERT INTO audit_blocks (block_no, event_type, events, first_at, last_at) "
    f"VALUES (NEW.sequence_num / {BLOCK}, NEW.event_type, 1, NEW.timestamp, NEW.timestamp) "
    "ON CONFLICT (block_no, event_type) DO UPDATE SET events = events + 1, "
    "first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at);"
)
_SQLITE_DECREMENT = (
    f"UPDATE audit_blocks SET events = events - 1 WHERE block_no = OLD.sequence_num / {BLOCK} "
    "AND event_type = OLD.event_type;"
)
SQLITE_TRIGGERS = {
    "audit_blocks_insert": f"AFTER INSERT ON audit_events BEGIN {_SQLITE_UPSERT} END",
    "audit_blocks_delete": f"AFTER DELETE ON audit_events BEGIN {_SQLITE_DECREMENT} END",
    "audit_blocks_update": (
        "AFTER UPDATE OF sequence_num, event_type, timestamp ON audit_events "
        f"BEGIN {_SQLITE_DECREMENT} {_SQLITE_UPSERT} END"
    ),
}

PG_FUNCTION = f"""
CREATE FUNCTION audit_blocks_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM audit_blocks;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE audit_blocks SET events = events - 1
        WHERE block_no = OLD.sequence_num / {BLOCK} AND event_type = OLD.event_type;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO audit_blocks (block_no, event_type, events, first_at, last_at)
        VALUES (NEW.sequence_num / {BLOCK}, NEW.event_type, 1, NEW.timestamp, NEW.timestamp)
        ON CONFLICT (block_no, event_type) DO UPDATE SET events = audit_blocks.events + 1,
            first_at = LEAST(audit_blocks.first_at, EXCLUDED.first_at),
            last_at = GREATEST(audit_blocks.last_at, EXCLUDED.last_at);
    END IF;
    RETURN NULL;
END
$$
"""
PG_TRIGGERS = (
    "CREATE TRIGGER audit_blocks_track AFTER INSERT OR DELETE OR UPDATE OF sequence_num, "
    "event_type, timestamp ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_blocks_track()",
    "CREATE TRIGGER audit_blocks_truncate AFTER TRUNCATE ON audit_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_blocks_track()",
)


def upgrade() -> None:
    op.create_index("ix_tasks_user_status_seq", "tasks", ["user_id", "status", "seq"], unique=False)
    op.create_index("ix_tasks_seq", "tasks", ["seq"], unique=False)
    op.create_index(
        "ix_audit_events_user_seq",
        "audit_events",
        ["user_id", "sequence_num", "event_type", "timestamp"],
        unique=False,
    )
    op.create_index(
        "ix_audit_events_user_type", "audit_events", ["user_id", "event_type", "timestamp"], unique=False
    )
    op.drop_index("ix_audit_events_user", table_name="audit_events")
    op.drop_index("ix_audit_events_timestamp", table_name="audit_events")
    op.create_table(
        "audit_blocks",
        sa.Column("block_no", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("first_at", UTCDateTime(), nullable=False),
        sa.Column("last_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("block_no", "event_type"),
    )
    op.execute(
        "INSERT INTO audit_blocks (block_no, event_type, events, first_at, last_at) "
        f"SELECT sequence_num / {BLOCK}, event_type, count(*), min(timestamp), max(timestamp) "
        f"FROM audit_events GROUP BY sequence_num / {BLOCK}, event_type"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_blocks_truncate ON audit_events")
        op.execute("DROP TRIGGER audit_blocks_track ON audit_events")
        op.execute("DROP FUNCTION audit_blocks_track()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("audit_blocks")
    op.create_index("ix_audit_events_timestamp", "audit_events", ["timestamp"], unique=False)
    op.create_index("ix_audit_events_user", "audit_events", ["user_id"], unique=False)
    op.drop_index("ix_audit_events_user_type", table_name="audit_events")
    op.drop_index("ix_audit_events_user_seq", table_name="audit_events")
    op.drop_index("ix_tasks_seq", table_name="tasks")
    op.drop_index("ix_tasks_user_status_seq", table_name="tasks")
