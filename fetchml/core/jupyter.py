"""Wire models of Jupyter services: the contract's JupyterService / StartJupyterRequest (plus the
fields documented beyond it in /schema), and the worker side of running them.

A service's life: `starting` (queued for a service slot, then placed on a worker and starting
there) -> `running` (its worker's probe of `/api/status` answered 200) -> `stopping` (a user,
an admin or the idle cull asked) -> `stopped`. `error` ends it from anywhere: the server crashed,
it could not start, or its worker was lost. The contract's status enum has no `queued`: a
queued service is `starting` with `worker_id` null and a `pending_reason`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from fetchml.core.models import JOB_NAME_PATTERN, JsonInt, TimeLimitMinutes, Wire

DEFAULT_JUPYTER_IMAGE = "jupyter/pytorch:latest"  # the contract's default
# Names that end up in paths on the worker (the workspace directory) and in container names.
SERVICE_NAME_PATTERN = JOB_NAME_PATTERN
MAX_LOG_TAIL = 50  # last log lines kept with a service that ended in error
MAX_LOG_TAIL_CHARS = 2000  # per line


class JupyterStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


LIVE_JUPYTER = frozenset({JupyterStatus.STARTING, JupyterStatus.RUNNING, JupyterStatus.STOPPING})
ENDED_JUPYTER = frozenset({JupyterStatus.STOPPED, JupyterStatus.ERROR})


class StartJupyterRequest(Wire):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=SERVICE_NAME_PATTERN)]
    # A directory per user on the worker, kept after the service stops; default: the name.
    workspace: Annotated[str, Field(min_length=1, max_length=64, pattern=SERVICE_NAME_PATTERN)] | None = None
    image: Annotated[str, Field(min_length=1, max_length=512)] = DEFAULT_JUPYTER_IMAGE
    gpu: Annotated[JsonInt, Field(ge=0, le=64)] = 0
    gpu_type: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    cpu: Annotated[JsonInt, Field(ge=0, le=4096)] = 0
    memory_gb: Annotated[JsonInt, Field(ge=0, le=1_000_000)] = 0
    # Minutes without kernel or HTTP activity before the service is stopped; 0: never.
    # Default: the server's FETCHML_JUPYTER_IDLE_TIMEOUT_MINUTES.
    idle_timeout_minutes: Annotated[JsonInt, Field(ge=0, le=525_600)] | None = None
    # Minutes it may run (from its first `running`), busy or idle; absent: no limit.
    time_limit_minutes: TimeLimitMinutes = None


class JupyterService(Wire):
    # The contract's fields.
    id: str
    name: str
    status: JupyterStatus
    # The worker's own address of the server (with its base URL), and the server's token: the
    # owner and admins only; null for anyone else and until the service runs.
    url: str | None = None
    token: str | None = None
    created_at: datetime
    # Documented beyond the contract.
    user_id: str
    workspace: str
    image: str
    gpu: int = 0
    gpu_type: str | None = None
    cpu: int = 0
    memory_gb: int = 0
    idle_timeout_minutes: int = 0
    time_limit_minutes: int | None = None
    worker_id: str | None = None
    gpus: list[int] = []
    pending_reason: str | None = None
    error: str | None = None
    log_tail: list[str] = []
    proxy_path: str  # GET/WS this path on the fetchml server to reach the service (authenticated)
    last_activity: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # "stop" (asked by a user or admin), "idle_stop", "time_limit", "worker_stopped",
    # "worker_lost", "worker_restarted", "crashed"
    stop_reason: str | None = None


def proxy_path(service_id: str) -> str:
    """The base URL a service's Jupyter server runs under: the same path on the worker and on
    the fetchml server's proxy, so no link inside Jupyter needs rewriting."""
    return f"/v1/jupyter/services/{service_id}/proxy/"


# -- the worker side --------------------------------------------------------------------------


class ServiceAssignment(Wire):
    """What a worker needs to start one service. The token goes to the Jupyter server in its
    environment (never its argv, which every local user can read)."""

    id: str
    name: str
    user_id: str
    workspace: str
    image: str
    gpus: list[int] = []
    cpu: int = 0
    memory_gb: int = 0
    token: str
    base_url: str  # proxy_path(id)


class ServiceClaimRequest(Wire):
    running: list[str] = []  # ids of the services the worker runs (or is starting) now
    # Among them, those it is already stopping: not asked again (the claim would answer at once).
    stopping: list[str] = []


class ServiceClaimResponse(Wire):
    start: list[ServiceAssignment] = []
    stop: list[str] = []  # service ids to stop (asked, culled, or no longer this worker's)


class ServiceReport(Wire):
    status: Literal["running", "stopped", "error"]
    url: Annotated[str, Field(max_length=2048)] | None = None  # with the first `running`
    error: Annotated[str, Field(max_length=4096)] | None = None
    log_tail: Annotated[
        list[Annotated[str, Field(max_length=MAX_LOG_TAIL_CHARS)]], Field(max_length=MAX_LOG_TAIL)
    ] = []
    last_activity: datetime | None = None  # Jupyter's own, from /api/status
