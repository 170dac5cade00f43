"""The worker protocol (worker-role keys; admins may act for any worker)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from fetchml.core.models import Task
from fetchml.core.protocol import (
    Assignment,
    ClaimRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    StatusReport,
)
from fetchml.server.context import principal_of, services_of
from fetchml.server.security import WORKERS


class WorkerProtocolController(Controller):
    path = "/v1/workers"
    opt = WORKERS
    tags = ["Worker protocol"]

    @post("/register", status_code=200, opt={"errors": (409,)}, summary="Register (or re-register) a worker")
    async def register(
        self, request: Request[Any, Any, Any], data: RegisterWorkerRequest
    ) -> RegisterWorkerResponse:
        return await services_of(request).workers.register(principal_of(request), data)

    @post(
        "/{worker_id:str}/heartbeat",
        status_code=200,
        opt={"errors": (409,)},
        summary="Renew leases; receive commands",
    )
    async def heartbeat(
        self, request: Request[Any, Any, Any], worker_id: str, data: HeartbeatRequest
    ) -> HeartbeatResponse:
        return await services_of(request).workers.heartbeat(principal_of(request), worker_id, data)

    @post(
        "/{worker_id:str}/claim",
        status_code=200,
        opt={"errors": (409,)},
        responses={204: ResponseSpec(data_container=None, description="No assignment within `wait` seconds")},
        summary="Long-poll for an assignment",
        description="200 with an Assignment as soon as a task fits this worker; 204 when `wait` seconds "
        "pass first. The optional body carries the last report of an attempt of this worker that "
        "just ended, applied first in the same transaction.",
    )
    async def claim(
        self,
        request: Request[Any, Any, Any],
        worker_id: str,
        wait: Annotated[float, Parameter(ge=0, le=120)] = 20.0,
        data: ClaimRequest | None = None,
    ) -> Response[Assignment | None]:
        ended = data.ended if data is not None else None
        assignment = await services_of(request).claims.claim(principal_of(request), worker_id, wait, ended)
        if assignment is None:
            return Response(content=None, status_code=204)
        return Response(content=assignment, status_code=200)


class TaskReportController(Controller):
    path = "/v1/tasks/{task_id:str}/report"
    opt = WORKERS
    tags = ["Worker protocol"]

    @post(
        "/",
        status_code=200,
        opt={"errors": (409,)},
        summary="Report an attempt's status (fenced by attempt number)",
    )
    async def report(self, request: Request[Any, Any, Any], task_id: str, data: StatusReport) -> Task:
        return await services_of(request).claims.report(principal_of(request), task_id, data)
