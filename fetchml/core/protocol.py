"""Wire models of the worker protocol (worker-role keys) and of logs and artifacts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from fetchml.core.enums import TaskStatus, WorkerStatus
from fetchml.core.models import JOB_NAME_PATTERN, JsonInt, Task, Wire

MAX_LOG_LINES_PER_CHUNK = 5000
MAX_LOG_LINE_CHARS = 16384
# Answer headers of a log append (204, no body): the attempt's next line number, and
# "reached" once the task's log quota is spent (the worker may stop sending).
LOG_NEXT_LINE_HEADER = "X-Fetchml-Log-Next-Line"
LOG_QUOTA_HEADER = "X-Fetchml-Log-Quota"


class GpuDevice(Wire):
    index: int
    name: str
    memory_mb: int = 0


class WorkerCapabilities(Wire):
    """The contract's Worker.capabilities, plus what the scheduler needs to place GPUs."""

    cpu_cores: Annotated[JsonInt, Field(ge=0, le=1_000_000)]
    memory_gb: Annotated[JsonInt, Field(ge=0, le=1_000_000_000)]
    gpu_count: Annotated[JsonInt, Field(ge=0, le=1024)] = 0
    gpu_type: str | None = None
    gpus: list[GpuDevice] = []
    executor: Literal["docker", "local"] = "local"
    hostname: str | None = None
    fetchml_version: str | None = None


class RegisterWorkerRequest(Wire):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=JOB_NAME_PATTERN)]
    capabilities: WorkerCapabilities
    batch_slots: Annotated[JsonInt, Field(ge=1, le=1024)] = 1
    service_slots: Annotated[JsonInt, Field(ge=0, le=1024)] = 0


class RegisterWorkerResponse(Wire):
    worker_id: str
    heartbeat_interval: float
    heartbeat_timeout: float
    claim_wait: float
    lost_tasks: list[str] = []  # tasks this worker held before it re-registered; now requeued or failed
    # The installation's id (one per database, shared by every server process on it). Workers
    # stamp it on what they start, so orphan cleanup never touches another server's tasks.
    server_id: str | None = None
    # The claim route takes an ending attempt's last report (`ClaimRequest.ended`). A server
    # that does not say so ignores a claim's body: a worker must not send one then.
    claim_takes_report: bool = False
    # A report may carry `started` (StatusReport): an attempt that ended before its running
    # report went out is reported once. A server that does not say so refuses `completed` from
    # `preparing` (409): a worker must send `running` first then.
    report_takes_started: bool = False


class ActiveAttempt(Wire):
    task_id: str
    attempt: int


class HeartbeatRequest(Wire):
    active: list[ActiveAttempt] = []
    # The worker is shutting down (SIGTERM): it takes no new work, so the server drains it
    # (tasks placed on it but not started go back to the queue, no retry spent) and marks it
    # offline at the first heartbeat at which it holds nothing.
    stopping: bool = False


class WorkerCommand(Wire):
    type: Literal["cancel"]
    task_id: str
    attempt: int


class HeartbeatResponse(Wire):
    status: WorkerStatus
    drain: bool = False
    commands: list[WorkerCommand] = []


class Assignment(Wire):
    task: Task
    attempt: int
    gpus: list[int] = []
    node_rank: int = 0
    num_nodes: int = 1
    master_addr: str | None = None
    master_port: int | None = None
    lease_expires_at: datetime
    # The task's time limit in seconds, which the worker measures from the start of the process:
    # past it the attempt is stopped as a cancel stops it and reported failed, "time limit".
    # Absent: no limit. The server converts the task's minutes (docs/worker-protocol.md).
    time_limit_seconds: float | None = None
    # The trackers' environment for the task's process (docs/plugins.md), secrets included: the
    # worker holding the attempt is the only one that sees it, and never logs it.
    env: dict[str, str] = {}


class StatusReport(Wire):
    attempt: Annotated[JsonInt, Field(ge=1)]
    node_rank: Annotated[JsonInt, Field(ge=0, le=1023)] = 0  # which node of a gang reports
    status: Literal[TaskStatus.RUNNING, TaskStatus.COLLECTING, TaskStatus.COMPLETED, TaskStatus.FAILED]
    exit_code: JsonInt | None = None
    error: Annotated[str, Field(max_length=4096)] | None = None
    output: Annotated[str, Field(max_length=65536)] | None = None
    # With status failed: the attempt did not fail, the worker stopped it (a graceful worker
    # stop past its grace, or a lost lease). The task goes back to the queue at once without
    # spending a retry (or fails as cancelled when a cancel was asked).
    interrupted: bool = False
    # The attempt's process started, and this report also stands for the `running` report the
    # worker did not send (the process ended within its first moments): from `preparing` the
    # task passes through `running` (its start stamped and audited) in the same transaction.
    # Only to a server whose registration answer says `report_takes_started`.
    started: bool = False


class EndedAttempt(StatusReport):
    """The last report of an attempt (`completed` or `failed`), sent with the claim for the
    next task: one request and one transaction instead of two."""

    task_id: Annotated[str, Field(min_length=1, max_length=64)]
    status: Literal[TaskStatus.COMPLETED, TaskStatus.FAILED]


class ClaimRequest(Wire):
    """The optional body of a claim (docs/worker-protocol.md): the report of an attempt of this
    worker that just ended, applied before the claim, in its transaction."""

    ended: EndedAttempt | None = None


class LogChunk(Wire):
    attempt: Annotated[JsonInt, Field(ge=1)]
    start_line: Annotated[JsonInt, Field(ge=0)]
    lines: Annotated[
        list[Annotated[str, Field(max_length=MAX_LOG_LINE_CHARS)]], Field(max_length=MAX_LOG_LINES_PER_CHUNK)
    ]


class LogPage(Wire):
    task_id: str
    status: TaskStatus
    offset: int  # index of the first line in `lines`, over all attempts
    next_offset: int  # ask for this next
    lines: list[str]
    done: bool  # the task has ended and every line is in this page or an earlier one


class Artifact(Wire):
    path: str
    size: int
    sha256: str
    attempt: int
    created_at: datetime


class WorkerSlots(Wire):
    batch_total: int
    batch_available: int
    service_total: int
    service_available: int


class WorkerInfo(Wire):
    """The contract's Worker."""

    id: str
    name: str
    status: WorkerStatus
    connected_at: datetime
    last_heartbeat: datetime | None = None
    capabilities: WorkerCapabilities
    slots: WorkerSlots
    active_tasks: list[str] = []
