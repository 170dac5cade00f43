"""Jupyter services (docs/jupyter.md): the contract's /v1/jupyter/services, and the worker
protocol's service half under /v1/workers/{worker_id}/services."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import Parameter

from fetchml.core.jupyter import (
    JupyterService,
    ServiceClaimRequest,
    ServiceClaimResponse,
    ServiceReport,
    StartJupyterRequest,
)
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import USERS, WORKERS


class JupyterController(Controller):
    path = "/v1/jupyter/services"
    opt = USERS
    tags = ["Jupyter"]

    @get(
        "/",
        summary="List Jupyter services",
        description="A user sees their own services, an admin everyone's (newest first, at most 1000).",
    )
    async def list_services(self, request: Request[Any, Any, Any]) -> list[JupyterService]:
        return await services_of(request).jupyter.list(principal_of(request))

    @post(
        "/",
        status_code=201,
        opt={"errors": (409,)},
        summary="Start Jupyter service",
        description=(
            "Queues a Jupyter server for a worker's service slot. Beyond the contract: `gpu`, "
            "`gpu_type`, `cpu`, `memory_gb` (default: none) and `idle_timeout_minutes` (0: never; "
            "default FETCHML_JUPYTER_IDLE_TIMEOUT_MINUTES). The answer is `starting`; it turns "
            "`running` once its worker's probe of `/api/status` succeeds. 409 when the user already "
            "has a live service of that name, or too many live services."
        ),
    )
    async def start_service(
        self, request: Request[Any, Any, Any], data: StartJupyterRequest
    ) -> JupyterService:
        return await services_of(request).jupyter.create(principal_of(request), data, client_ip(request))

    @get(
        "/{service_id:str}",
        summary="Get one Jupyter service (beyond the contract)",
        description="403 for another user's service (admins see all).",
    )
    async def get_service(self, request: Request[Any, Any, Any], service_id: str) -> JupyterService:
        return await services_of(request).jupyter.get(principal_of(request), service_id)

    @delete(
        "/{service_id:str}",
        opt={"errors": (409,)},
        summary="Stop Jupyter service",
        description=(
            "204 at once: a queued service is stopped, a started one goes `stopping` until its "
            "worker reports it `stopped`. 409 when it has already ended."
        ),
    )
    async def stop_service(self, request: Request[Any, Any, Any], service_id: str) -> None:
        await services_of(request).jupyter.stop(principal_of(request), service_id, client_ip(request))


class JupyterWorkerController(Controller):
    path = "/v1/workers/{worker_id:str}/services"
    opt = WORKERS
    tags = ["Worker protocol"]

    @post(
        "/claim",
        status_code=200,
        summary="Long-poll for services to start or stop on this worker",
        description=(
            "`running`: the services the worker runs now. Answers as soon as there is something "
            "to start (each start is delivered once) or stop, else with empty lists after `wait` seconds."
        ),
    )
    async def claim_services(
        self,
        request: Request[Any, Any, Any],
        worker_id: str,
        data: ServiceClaimRequest,
        wait: Annotated[float, Parameter(ge=0, le=120)] = 20.0,
    ) -> ServiceClaimResponse:
        return await services_of(request).jupyter.claim(
            principal_of(request), worker_id, data.running, wait, stopping=data.stopping
        )

    @post(
        "/{service_id:str}/report",
        status_code=200,
        opt={"errors": (409,)},
        summary="Report a service's state (running with its url and activity, stopped, error)",
        description="409 when the service is no longer live on this worker: the worker stops it.",
    )
    async def report_service(
        self, request: Request[Any, Any, Any], worker_id: str, service_id: str, data: ServiceReport
    ) -> JupyterService:
        return await services_of(request).jupyter.report(principal_of(request), worker_id, service_id, data)
