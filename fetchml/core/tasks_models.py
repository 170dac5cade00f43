"""Wire models of tasks: the submission, the task as served (with what only its owner may read),
its datasets, plugins and node placement."""

from __future__ import annotations

import posixpath
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from fetchml.core.enums import TaskStatus
from fetchml.core.wire import (
    JOB_NAME_PATTERN,
    MAX_JSON_DEPTH,
    SHA256_RE,
    JsonInt,
    NonNegInt,
    TimeLimitMinutes,
    Wire,
    json_depth,
)


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
