from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    COLLECTING = "collecting"
    COMPLETED = "completed"
    FAILED = "failed"


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    WORKER = "worker"


class WorkerStatus(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    OFFLINE = "offline"


class ReservationStatus(StrEnum):
    ACTIVE = "active"  # holds its GPUs, nothing placed on it yet
    CLAIMED = "claimed"  # a task carrying its id was placed on it; it holds until it expires
    EXPIRED = "expired"  # its lifetime ran out: it holds nothing


class ExperimentStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"
    DELETED = "deleted"


class AuditEventType(StrEnum):
    # The contract's enum ...
    JOB_QUEUED = "job_queued"
    JOB_STARTED = "job_started"
    JOB_COMPLETED = "job_completed"
    FILE_ACCESS = "file_access"
    AUTH_ATTEMPT = "auth_attempt"
    PLUGIN_CONFIGURED = "plugin_configured"
    SCHEDULER_DRAIN = "scheduler_drain"
    AUDIT_VERIFIED = "audit_verified"
    # ... plus mutations the contract has no type for. Recording them under an unrelated
    # contract type would make filtering by type lie, so they get their own names.
    JOB_CANCELLED = "job_cancelled"
    EXPERIMENT_CREATED = "experiment_created"
    KEY_CREATED = "key_created"
    KEY_REVOKED = "key_revoked"
    PRIORITY_CHANGED = "priority_changed"
    RESERVATION_CREATED = "reservation_created"
    RESERVATION_CLAIMED = "reservation_claimed"
    RESERVATION_EXPIRED = "reservation_expired"
    # Jupyter services: action "start" (requested); "stop" (by a user), "idle_stop" (culled),
    # "worker_stopped"; "error" (crashed or could not start), "worker_lost", "worker_restarted".
    JUPYTER_STARTED = "jupyter_started"
    JUPYTER_STOPPED = "jupyter_stopped"
    JUPYTER_FAILED = "jupyter_failed"


# The types the contract's closed `event_type` enum names: GET /v1/audit/events returns only
# these unless asked for ours, so a client generated from the contract can read every page.
CONTRACT_AUDIT_EVENT_TYPES = frozenset(
    {
        AuditEventType.JOB_QUEUED,
        AuditEventType.JOB_STARTED,
        AuditEventType.JOB_COMPLETED,
        AuditEventType.FILE_ACCESS,
        AuditEventType.AUTH_ATTEMPT,
        AuditEventType.PLUGIN_CONFIGURED,
        AuditEventType.SCHEDULER_DRAIN,
        AuditEventType.AUDIT_VERIFIED,
    }
)

ACTIVE_STATUSES = frozenset({TaskStatus.PREPARING, TaskStatus.RUNNING, TaskStatus.COLLECTING})
TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})
