"""Wire models of the server and scheduler state: health, queue counts, the scheduler's status,
priority changes and GPU reservations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from fetchml.core.enums import ReservationStatus
from fetchml.core.wire import JsonInt, Wire


class HealthResponse(Wire):
    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    timestamp: datetime


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
