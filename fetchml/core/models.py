"""Wire models: the shapes of the HTTP contract, shared by server, services and client."""

from __future__ import annotations

import posixpath
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from fetchml.core.enums import AuditEventType, ExperimentStatus, Role, TaskStatus

JOB_NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# Resource counts are stored in 32-bit INTEGER columns (PostgreSQL int4); an unbounded int
# would fail only at INSERT time, deep in the writer, instead of as a 422 naming the field.
MAX_INT32 = 2**31 - 1


def _json_integer(v: Any) -> Any:
    # Before any coercion: the server validates leniently, and `true`, `"5"` or `5.0` must be
    # a 422, not silently an int.
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("must be a JSON integer")
    return v


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
NonNegInt = Annotated[JsonInt, Field(ge=0, le=MAX_INT32)]

# A run-time limit in minutes (tasks and Jupyter services), beyond the contract: one minute to
# one year; None: no limit. A server may set a lower ceiling (FETCHML_MAX_TIME_LIMIT_MINUTES).
# The constraints sit on the optional type, so /schema shows them (and the description).
MAX_TIME_LIMIT_MINUTES = 525_600
TimeLimitMinutes = Annotated[
    JsonInt | None,
    Field(
        ge=1,
        le=MAX_TIME_LIMIT_MINUTES,
        description="Beyond the contract: minutes it may run before it is stopped "
        "(docs/scheduling.md#time-limits). A task stopped so fails with error `time limit` and "
        "is not retried.",
    ),
]


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", use_enum_values=False)


class HealthResponse(Wire):
    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    timestamp: datetime


# Free-form JSON is stored and served again; past this depth the JSON encoders give up (the
# response serializer at ~500 levels), which would turn a stored task into a permanent 500.
MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON-like value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


class PluginConfig(Wire):
    enabled: bool | None = None
    mode: Literal["sidecar", "remote", "disabled"] | None = None
    image: Annotated[str, Field(max_length=512)] | None = None
    settings: dict[str, Any] | None = None

    @field_validator("settings")
    @classmethod
    def _shallow(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and json_depth(v) > MAX_JSON_DEPTH:
            raise ValueError(f"settings may nest at most {MAX_JSON_DEPTH} levels deep")
        return v


class PluginStatus(Wire):
    name: str | None = None
    status: Literal["healthy", "unhealthy", "starting", "stopped"] | None = None
    url: str | None = None
    last_check: datetime | None = None


class NodeAssignment(Wire):
    """One node of a task's placement. ``slot_assigned`` turns true when that node's worker has
    taken its assignment (a claim); ``gpus`` and ``status`` are beyond the contract: the GPU
    indices the node holds on its worker, and the node's own progress (a gang's nodes move on
    their own; the task's status sums them up)."""

    node_id: int
    worker_id: str
    slot_assigned: bool = False
    gpus: list[int] = []
    status: str | None = None


def check_mount_path(value: str) -> str:
    """A dataset mount path is relative to the workspace and may not climb out of it."""
    if not value or value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        raise ValueError("mount_path must be a relative path inside the workspace")
    norm = posixpath.normpath(value.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or norm == ".":
        raise ValueError("mount_path must stay inside the workspace")
    return norm


class DatasetSpec(Wire):
    name: Annotated[str, Field(min_length=1, max_length=128, pattern=JOB_NAME_PATTERN)]
    source: Annotated[str, Field(min_length=1, max_length=4096)]
    sha256: str
    mount_path: Annotated[str, Field(max_length=1024)] | None = None

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        v = v.lower()
        if not SHA256_RE.match(v):
            raise ValueError("sha256 must be 64 hexadecimal characters")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if "://" in v and not v.startswith(("file://", "http://", "https://")):
            raise ValueError("source must be a local path, file://, http:// or https:// URL")
        return v

    @field_validator("mount_path")
    @classmethod
    def _mount(cls, v: str | None) -> str | None:
        return None if v is None else check_mount_path(v)


# Every variable-size field of a task is bounded, so that one stored task, and with it a page of
# tasks, has a known upper size (see the list byte budget in services/tasks). The dataset count
# has an operator setting (FETCHML_MAX_DATASETS_PER_TASK) below this hard ceiling.
MAX_DATASETS_HARD = 1024
MAX_METADATA_ENTRIES = 64
MAX_METADATA_BYTES = 16384
MAX_PLUGINS = 16
MAX_PLUGIN_CONFIGS_BYTES = 32768


DatasetName = Annotated[str, Field(max_length=256)]


def _json_size(value: Any) -> int:
    import json

    return len(json.dumps(value, separators=(",", ":"), default=str))


class CreateTaskRequest(Wire):
    job_name: Annotated[str, Field(min_length=1, max_length=64, pattern=JOB_NAME_PATTERN)]
    priority: Annotated[JsonInt, Field(ge=1, le=10)] = 5
    args: Annotated[str, Field(max_length=16384)] | None = None
    entrypoint: Annotated[str, Field(max_length=4096)] | None = None
    snapshot_id: Annotated[str, Field(max_length=128)] | None = None
    datasets: Annotated[list[DatasetName], Field(max_length=MAX_DATASETS_HARD)] | None = None
    dataset_specs: Annotated[list[DatasetSpec], Field(max_length=MAX_DATASETS_HARD)] | None = None
    cpu: NonNegInt | None = None
    memory_gb: NonNegInt | None = None
    gpu: NonNegInt | None = None
    metadata: (
        Annotated[
            dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=4096)]],
            Field(max_length=MAX_METADATA_ENTRIES),
        ]
        | None
    ) = None
    image: Annotated[str, Field(max_length=512)] | None = None
    gpu_type: Annotated[str, Field(max_length=64)] | None = None
    max_retries: Annotated[JsonInt, Field(ge=0, le=100)] | None = None
    node_count: Annotated[JsonInt, Field(ge=1, le=1024)] = 1
    reservation_id: Annotated[str, Field(max_length=128)] | None = None
    plugin_configs: (
        Annotated[dict[Annotated[str, Field(max_length=64)], PluginConfig], Field(max_length=MAX_PLUGINS)]
        | None
    ) = None
    # Default: the server's FETCHML_DEFAULT_TIME_LIMIT_MINUTES (unset: no limit).
    time_limit_minutes: TimeLimitMinutes = None

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v and sum(len(k) + len(x) for k, x in v.items()) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata keys and values may total at most {MAX_METADATA_BYTES} characters")
        return v

    @field_validator("plugin_configs")
    @classmethod
    def _plugins_size(cls, v: dict[str, PluginConfig] | None) -> dict[str, PluginConfig] | None:
        if (
            v
            and _json_size({k: c.model_dump(exclude_none=True) for k, c in v.items()})
            > MAX_PLUGIN_CONFIGS_BYTES
        ):
            raise ValueError(f"plugin_configs may take at most {MAX_PLUGIN_CONFIGS_BYTES} bytes as JSON")
        return v

    @field_validator("dataset_specs")
    @classmethod
    def _unique_mounts(cls, v: list[DatasetSpec] | None) -> list[DatasetSpec] | None:
        if v:
            seen: set[str] = set()
            for spec in v:
                mount = spec.mount_path or spec.name
                if mount in seen:
                    raise ValueError(f"two datasets share mount_path {mount!r}")
                seen.add(mount)
        return v


class Task(Wire):
    id: str
    job_name: str
    status: TaskStatus
    priority: int
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    worker_id: str | None = None
    error: str | None = None
    output: str | None = None
    entrypoint: str | None = None
    args: str | None = None
    snapshot_id: str | None = None
    datasets: list[str] = []
    dataset_specs: list[DatasetSpec] = []
    cpu: int | None = None
    memory_gb: int | None = None
    gpu: int | None = None
    gpu_type: str | None = None
    image: str | None = None
    user_id: str
    retry_count: int = 0
    max_retries: int = 0
    node_count: int = 1
    reservation_id: str | None = None
    metadata: dict[str, str] = {}
    plugin_configs: dict[str, PluginConfig] = {}
    plugin_status: dict[str, PluginStatus] = {}
    node_assignments: list[NodeAssignment] = []
    priority_aged: float
    pending_reason: str | None = None
    # Beyond the contract: what a worker needs and what `fetchml run` exits with.
    attempt: int = 0
    exit_code: int | None = None
    assigned_gpus: list[int] = []
    cancel_requested: bool = False
    time_limit_minutes: int | None = Field(
        default=None, description="Beyond the contract: the task's time limit; absent: none."
    )
    # Fields left out of the JSON: a task's contents, for a reader who is not its owner.
    _hidden: frozenset[str] = PrivateAttr(default=frozenset())

    @model_serializer(mode="wrap")
    def _omit_hidden(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self._hidden:
            data.pop(name, None)
        return data

    def without(self, fields: frozenset[str]) -> Task:
        """This task with `fields` absent (not null) from its JSON."""
        self._hidden = self._hidden | fields
        return self


# What only a task's owner (and admins) may read: what it runs, with what, and what it said.
TASK_CONTENT_FIELDS = frozenset(
    {
        "args",
        "entrypoint",
        "snapshot_id",
        "datasets",
        "dataset_specs",
        "metadata",
        "plugin_configs",
        "plugin_status",
        "image",
        "output",
        "error",
    }
)


class TaskList(Wire):
    tasks: list[Task]
    total: int
    limit: int
    offset: int


class QueueStats(Wire):
    queued: int
    running: int
    completed: int
    failed: int
    workers: int


class PriorityUpdate(Wire):
    """Body of PATCH /v1/scheduler/jobs/{id}/priority: a JSON integer 1..10."""

    priority: Annotated[JsonInt, Field(ge=1, le=10)]


class SchedulerStatus(Wire):
    workers_total: int
    workers_active: int
    workers_draining: int
    batch_queue_depth: int
    service_queue_depth: int
    tasks_running: int
    tasks_completed_24h: int
    reservations_active: int
    timestamp: datetime


ReservationStatus = Literal["active", "claimed", "expired"]


class Reservation(Wire):
    id: str
    user_id: str
    gpu_count: int
    gpu_type: str | None = None
    node_count: int
    expires_at: datetime
    status: ReservationStatus
    # Beyond the contract: when it was made and which GPUs it holds, per worker.
    created_at: datetime
    gpus: dict[str, list[int]] = {}


class CreateReservationRequest(Wire):
    gpu_count: Annotated[JsonInt, Field(ge=1, le=1024)]
    gpu_type: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    node_count: Annotated[JsonInt, Field(ge=1, le=1024)] = 1
    expires_minutes: Annotated[JsonInt, Field(ge=1, le=60 * 24 * 30)] = 30


class CreateExperimentRequest(Wire):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: Annotated[str, Field(max_length=4096)] | None = None
    commit_id: Annotated[str, Field(max_length=128)] | None = None


class Experiment(Wire):
    id: str
    name: str
    description: str | None = None
    commit_id: str | None = None
    created_at: datetime
    status: ExperimentStatus
    user_id: str | None = None


class AuditEvent(Wire):
    sequence_num: int
    timestamp: datetime
    event_type: AuditEventType
    user_id: str | None = None
    resource: str | None = None
    action: str | None = None
    success: bool
    ip_address: str | None = None
    error: str | None = None
    prev_hash: str
    event_hash: str
    metadata: dict[str, Any] = {}


class AuditEventList(Wire):
    events: list[AuditEvent]
    total: int
    limit: int
    offset: int


class VerificationResult(Wire):
    valid: bool
    total_events: int
    first_tampered: int | None = None
    chain_root_hash: str | None = None
    verified_at: datetime
    reason: str | None = None


class ChainRoot(Wire):
    root_hash: str
    timestamp: datetime | None = None
    total_events: int


class CreateKeyRequest(Wire):
    user: Annotated[str, Field(min_length=1, max_length=64, pattern=JOB_NAME_PATTERN)]
    role: Role
    # The one worker name a worker key may register (default: `user`); other roles take none.
    worker_name: Annotated[str, Field(min_length=1, max_length=64, pattern=JOB_NAME_PATTERN)] | None = None

    @model_validator(mode="after")
    def _worker_name_only_for_workers(self) -> CreateKeyRequest:
        if self.worker_name is not None and self.role is not Role.WORKER:
            raise ValueError("worker_name is only valid for role worker")
        return self


class ApiKeyInfo(Wire):
    id: str
    user_id: str
    role: Role
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    worker_name: str | None = None


class CreatedKey(ApiKeyInfo):
    key: str
