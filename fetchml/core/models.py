"""Wire models: the shapes of the HTTP contract, shared by server, services and client.

One module per domain, all re-exported here, so callers import from this one place:
core/wire.py (the `Wire` base, JSON-integer types, shared limits), core/tasks_models.py,
core/scheduler_models.py (health, queue, scheduler, reservations), core/experiments_models.py,
core/audit_models.py and core/keys_models.py.
"""

from __future__ import annotations

from fetchml.core.audit_models import AuditEvent, AuditEventList, ChainRoot, VerificationResult
from fetchml.core.enums import ReservationStatus
from fetchml.core.experiments_models import CreateExperimentRequest, Experiment
from fetchml.core.keys_models import ApiKeyInfo, CreatedKey, CreateKeyRequest
from fetchml.core.scheduler_models import (
    CreateReservationRequest,
    HealthResponse,
    PriorityUpdate,
    QueueStats,
    Reservation,
    SchedulerStatus,
)
from fetchml.core.tasks_models import (
    MAX_DATASETS_HARD,
    MAX_METADATA_BYTES,
    MAX_METADATA_ENTRIES,
    MAX_PLUGIN_CONFIGS_BYTES,
    MAX_PLUGINS,
    TASK_CONTENT_FIELDS,
    CreateTaskRequest,
    DatasetName,
    DatasetSpec,
    NodeAssignment,
    PluginConfig,
    PluginStatus,
    Task,
    TaskList,
    check_mount_path,
)
from fetchml.core.wire import (
    JOB_NAME_PATTERN,
    MAX_INT32,
    MAX_JSON_DEPTH,
    MAX_TIME_LIMIT_MINUTES,
    SHA256_RE,
    JsonInt,
    NonNegInt,
    TimeLimitMinutes,
    Wire,
    json_depth,
)

__all__ = [
    "JOB_NAME_PATTERN",
    "MAX_DATASETS_HARD",
    "MAX_INT32",
    "MAX_JSON_DEPTH",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_ENTRIES",
    "MAX_PLUGINS",
    "MAX_PLUGIN_CONFIGS_BYTES",
    "MAX_TIME_LIMIT_MINUTES",
    "SHA256_RE",
    "TASK_CONTENT_FIELDS",
    "ApiKeyInfo",
    "AuditEvent",
    "AuditEventList",
    "ChainRoot",
    "CreateExperimentRequest",
    "CreateKeyRequest",
    "CreateReservationRequest",
    "CreateTaskRequest",
    "CreatedKey",
    "DatasetName",
    "DatasetSpec",
    "Experiment",
    "HealthResponse",
    "JsonInt",
    "NodeAssignment",
    "NonNegInt",
    "PluginConfig",
    "PluginStatus",
    "PriorityUpdate",
    "QueueStats",
    "Reservation",
    "ReservationStatus",
    "SchedulerStatus",
    "Task",
    "TaskList",
    "TimeLimitMinutes",
    "VerificationResult",
    "Wire",
    "check_mount_path",
    "json_depth",
]
