"""SQLModel tables. Portable types only: the same schema runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Integer, String, UniqueConstraint, false
from sqlmodel import Field, SQLModel

from fetchml.store.types import UTCDateTime

# SQLite only auto-assigns rowids to a column declared exactly INTEGER PRIMARY KEY.
BIGINT_PK = BigInteger().with_variant(Integer(), "sqlite")


def _dt(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class TaskRow(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status_seq", "status", "seq"),
        # the scheduler reads the oldest queued tasks of each priority
        Index("ix_tasks_status_priority_seq", "status", "priority", "seq"),
        Index("ix_tasks_user_seq", "user_id", "seq"),
        Index("ix_tasks_ended_at", "ended_at"),
        # listings (migration 0011): a user's tasks of one status; deep offsets walk (seq)
        Index("ix_tasks_user_status_seq", "user_id", "status", "seq"),
        Index("ix_tasks_seq", "seq"),
    )

    # seq gives a total order for "newest first" that timestamps cannot (ties within a batch).
    seq: int | None = Field(default=None, sa_column=Column(BIGINT_PK, primary_key=True, autoincrement=True))
    id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    job_name: str = Field(max_length=64)
    status: str = Field(max_length=16)
    priority: int
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = _dt()
    ended_at: datetime | None = _dt()
    worker_id: str | None = Field(default=None, max_length=128)
    error: str | None = None
    output: str | None = None
    entrypoint: str | None = None
    args: str | None = None
    snapshot_id: str | None = Field(default=None, max_length=128)
    datasets: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    dataset_specs: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cpu: int | None = None
    memory_gb: int | None = None
    gpu: int | None = None
    gpu_type: str | None = Field(default=None, max_length=64)
    image: str | None = Field(default=None, max_length=512)
    user_id: str = Field(max_length=64)
    retry_count: int = 0
    max_retries: int = 0
    node_count: int = 1
    reservation_id: str | None = Field(default=None, max_length=128)
    extra_metadata: dict[str, str] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    plugin_configs: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    plugin_status: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    node_assignments: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    pending_reason: str | None = None
    # The current attempt's lease: the worker holding it must heartbeat before it expires.
    attempt: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    lease_expires_at: datetime | None = _dt(index=True)
    assigned_gpus: list[int] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    cancel_requested: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    exit_code: int | None = None
    time_limit_minutes: int | None = None  # None: no limit


class WorkerRow(SQLModel, table=True):
    __tablename__ = "workers"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=64)
    status: str = Field(max_length=16)
    key_id: str = Field(max_length=32)
    capabilities: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    batch_total: int = 1
    service_total: int = 0
    connected_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_heartbeat: datetime | None = _dt()


class TaskLogRow(SQLModel, table=True):
    __tablename__ = "task_logs"
    __table_args__ = (UniqueConstraint("task_id", "attempt", "line_no", name="uq_task_logs_line"),)

    id: int | None = Field(default=None, sa_column=Column(BIGINT_PK, primary_key=True, autoincrement=True))
    task_id: str = Field(max_length=64)
    attempt: int
    line_no: int
    line: str


class TaskLogStateRow(SQLModel, table=True):
    """Where each attempt's log stands, so an append reads one row instead of counting lines."""

    __tablename__ = "task_log_state"

    task_id: str = Field(primary_key=True, max_length=64)
    attempt: int = Field(primary_key=True)
    # Lines accepted from the worker (stored or dropped over the quota): the next start_line.
    next_line: int = 0
    stored_lines: int = 0  # rows in task_logs for this attempt, the quota notice not counted
    stored_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    dropped_lines: int = 0  # over the task's quota
    # line_no of the one quota notice of the task, when it is in this attempt's lines.
    notice_line: int | None = None


class ArtifactRow(SQLModel, table=True):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("task_id", "attempt", "path", name="uq_artifacts_path"),)

    id: int | None = Field(default=None, sa_column=Column(BIGINT_PK, primary_key=True, autoincrement=True))
    task_id: str = Field(max_length=64, index=True)
    attempt: int
    path: str = Field(max_length=1024)
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ExperimentRow(SQLModel, table=True):
    __tablename__ = "experiments"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=128, unique=True)
    description: str | None = None
    commit_id: str | None = Field(default=None, max_length=128)
    status: str = Field(max_length=16)
    user_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    user_id: str = Field(max_length=64, index=True)
    role: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    revoked_at: datetime | None = _dt()
    # A worker key may register only this worker name (None for every other role).
    worker_name: str | None = Field(default=None, max_length=64)


class AuditEventRow(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_type", "event_type"),
        # A user's events: in sequence order with the other filters (pages), and by type and
        # time (counts); time ranges without a user go through AuditBlockRow (migration 0011).
        Index("ix_audit_events_user_seq", "user_id", "sequence_num", "event_type", "timestamp"),
        Index("ix_audit_events_user_type", "user_id", "event_type", "timestamp"),
    )

    # Assigned by the appender under the chain lock, never by the database: the number is hashed.
    sequence_num: int = Field(sa_column=Column(BIGINT_PK, primary_key=True, autoincrement=False))
    timestamp: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    event_type: str = Field(max_length=32)
    user_id: str | None = Field(default=None, max_length=64)
    resource: str | None = Field(default=None, max_length=256)
    action: str | None = Field(default=None, max_length=64)
    success: bool = True
    ip_address: str | None = Field(default=None, max_length=64)
    error: str | None = None
    extra_metadata: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSON, nullable=False)
    )
    prev_hash: str = Field(max_length=64)
    event_hash: str = Field(max_length=64)


class AuditBlockRow(SQLModel, table=True):
    """The audit log's zone map: per block of sequence numbers (sequence_num // 4096) and
    event type, how many events and the bounds of their timestamps. Kept exact by triggers on
    audit_events (migration 0011), never written by the application; the bounds only widen.
    fetchml.services.auditquery answers totals and deep pages of GET /v1/audit/events from it."""

    __tablename__ = "audit_blocks"

    block_no: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    event_type: str = Field(sa_column=Column(String(32), primary_key=True))
    events: int = Field(sa_column=Column(BigInteger, nullable=False))
    first_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    last_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class ReservationRow(SQLModel, table=True):
    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_status_expires", "status", "expires_at"),)

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=64)
    gpu_count: int
    gpu_type: str | None = Field(default=None, max_length=64)
    node_count: int = 1
    status: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    # The GPUs held, picked from what was free at creation: {worker_id: [gpu index, ...]}.
    gpus: dict[str, list[int]] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class SnapshotOwnerRow(SQLModel, table=True):
    __tablename__ = "snapshot_owners"

    # Content-addressed: every user who uploaded these bytes owns the digest.
    digest: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(primary_key=True, max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class SnapshotShareRow(SQLModel, table=True):
    __tablename__ = "snapshot_shares"

    # An admin shared this snapshot: every user may name it in a task.
    digest: str = Field(primary_key=True, max_length=64)
    shared_by: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class AuditCheckpointRow(SQLModel, table=True):
    __tablename__ = "audit_checkpoints"

    # A signed statement "the chain up to and including `sequence_num` has head `root`": it
    # makes a truncated tail or a rewritten chain detectable by whoever holds the public key.
    sequence_num: int = Field(sa_column=Column(BIGINT_PK, primary_key=True, autoincrement=False))
    root: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    key_id: str = Field(max_length=64)
    signature: str = Field(max_length=256)


class ServerMetaRow(SQLModel, table=True):
    __tablename__ = "server_meta"

    # Facts about the installation as a whole (shared by every server process on one database),
    # e.g. its id, which workers stamp on what they start so cleanup never crosses servers.
    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=1024)


class IdempotencyKeyRow(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)

    # Per user: two users may pick the same key without seeing each other's tasks.
    user_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    task_id: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class EventRow(SQLModel, table=True):
    __tablename__ = "events"

    # The live feed's replay window (fetchml.core.events): one row per committed change, ids
    # assigned under the database-wide write lock so they grow in commit order. Pruned to the
    # newest `event_replay_window` rows; PostgreSQL NOTIFY carries only ids, readers fetch rows.
    id: int = Field(sa_column=Column(BIGINT_PK, primary_key=True, autoincrement=False))
    type: str = Field(max_length=32)
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    task_id: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class QueueCountRow(SQLModel, table=True):
    __tablename__ = "queue_counts"

    # Queued tasks per priority, moved by each write transaction's feed events (fetchml.services
    # .feedlog) under the write lock: the queue_depth event costs O(priorities), not a count of
    # every queued task per commit. Recounted from `tasks` every few hundred events.
    priority: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    queued: int = Field(default=0, sa_column=Column(Integer, nullable=False))


class JupyterServiceRow(SQLModel, table=True):
    """A Jupyter service (fetchml.services.jupyter). `status` adds `queued` (no worker yet) to
    the contract's enum; the wire shows it as `starting` with a pending reason."""

    __tablename__ = "jupyter_services"
    __table_args__ = (
        Index("ix_jupyter_services_status_seq", "status", "seq"),
        Index("ix_jupyter_services_user_seq", "user_id", "seq"),
        Index("ix_jupyter_services_worker", "worker_id"),
    )

    seq: int | None = Field(default=None, sa_column=Column(BIGINT_PK, primary_key=True, autoincrement=True))
    id: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    name: str = Field(max_length=64)
    user_id: str = Field(max_length=64)
    workspace: str = Field(max_length=64)
    image: str = Field(max_length=512)
    gpu: int = 0
    gpu_type: str | None = Field(default=None, max_length=64)
    cpu: int = 0
    memory_gb: int = 0
    idle_timeout_minutes: int = 0
    time_limit_minutes: int | None = None  # None: no limit
    status: str = Field(max_length=16)
    worker_id: str | None = Field(default=None, max_length=64)
    gpus: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # The start went out to the worker (each start is delivered once).
    delivered: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    token: str = Field(max_length=128)
    url: str | None = Field(default=None, max_length=2048)
    error: str | None = None
    log_tail: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    stop_reason: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    started_at: datetime | None = _dt()
    ended_at: datetime | None = _dt()
    last_activity: datetime | None = _dt()


class PluginRow(SQLModel, table=True):
    """A tracking plugin's config (fetchml.services.plugins), secrets included: served redacted."""

    __tablename__ = "plugins"

    name: str = Field(primary_key=True, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    updated_by: str = Field(max_length=64)
