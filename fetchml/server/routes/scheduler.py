"""Scheduler and worker management (admin keys), and re-prioritising a task (its owner too)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, patch

from fetchml.core.models import PriorityUpdate, SchedulerStatus, Task
from fetchml.core.protocol import WorkerInfo
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import ADMIN_ONLY, USERS


class SchedulerController(Controller):
    # Guards are per route: they add up, so a controller-wide ADMIN_ONLY would also shut the
    # owner out of the priority route.
    path = "/v1/scheduler"
    tags = ["Scheduler"]

    @get("/status", opt=ADMIN_ONLY, summary="Scheduler status: worker counts, queue depths, metrics")
    async def status(self, request: Request[Any, Any, Any]) -> SchedulerStatus:
        return await services_of(request).scheduler.status()

    @get("/workers", opt=ADMIN_ONLY, summary="List workers (every status, offline ones too)")
    async def list_workers(self, request: Request[Any, Any, Any]) -> list[WorkerInfo]:
        return await services_of(request).workers.list()

    @get("/workers/{worker_id:str}", opt=ADMIN_ONLY, summary="Get a worker")
    async def get_worker(self, request: Request[Any, Any, Any], worker_id: str) -> WorkerInfo:
        return await services_of(request).workers.get(worker_id)

    @delete(
        "/workers/{worker_id:str}",
        opt={**ADMIN_ONLY, "errors": (409,)},
        summary="Drain a worker",
        description=(
            "No new assignments; its running tasks finish; then it goes offline (at its first "
            "heartbeat without tasks). 204 also when it is already draining; 409 when it is offline."
        ),
    )
    async def drain_worker(self, request: Request[Any, Any, Any], worker_id: str) -> None:
        await services_of(request).workers.drain(principal_of(request), worker_id, client_ip(request))

    @patch(
        "/jobs/{task_id:str}/priority",
        opt={**USERS, "errors": (409,)},
        summary="Change a queued or active task's priority (its owner or an admin)",
    )
    async def set_priority(self, request: Request[Any, Any, Any], task_id: str, data: PriorityUpdate) -> Task:
        return await services_of(request).tasks.set_priority(
            principal_of(request), task_id, data.priority, client_ip(request)
        )
