"""Jupyter services: the user's side (`client.jupyter`) and the worker's (`client.jupyter_workers`)."""

from __future__ import annotations

from fetchml.client.base import DomainClient, parse, parse_list, segment
from fetchml.core.jupyter import (
    JupyterService,
    ServiceClaimRequest,
    ServiceClaimResponse,
    ServiceReport,
    StartJupyterRequest,
)

BASE = "/v1/jupyter/services"


class JupyterClient(DomainClient):
    def start(self, request: StartJupyterRequest) -> JupyterService:
        body = request.model_dump(mode="json", exclude_none=True)
        return parse(self._t.request("POST", BASE, json=body), JupyterService)

    def list(self) -> list[JupyterService]:
        return parse_list(self._t.request("GET", BASE), JupyterService)

    def get(self, service_id: str) -> JupyterService:
        return parse(self._t.request("GET", f"{BASE}/{segment(service_id)}"), JupyterService)

    def stop(self, service_id: str) -> None:
        resp = self._t.request("DELETE", f"{BASE}/{segment(service_id)}")
        if resp.status_code != 204:
            parse(resp, JupyterService)  # raises the envelope's error


class JupyterWorkersClient(DomainClient):
    """The worker protocol's service half (worker-role keys)."""

    def claim(
        self, worker_id: str, running: list[str], wait: float, stopping: list[str] | None = None
    ) -> ServiceClaimResponse:
        """Long poll: services to start or stop on this worker, as soon as there are any, or
        empty lists after `wait` seconds."""
        resp = self._t.request(
            "POST",
            f"/v1/workers/{segment(worker_id)}/services/claim",
            params={"wait": wait},
            json=ServiceClaimRequest(running=running, stopping=stopping or []).model_dump(mode="json"),
            timeout=wait + 30,
        )
        return parse(resp, ServiceClaimResponse)

    def report(self, worker_id: str, service_id: str, report: ServiceReport) -> JupyterService:
        resp = self._t.request(
            "POST",
            f"/v1/workers/{segment(worker_id)}/services/{segment(service_id)}/report",
            json=report.model_dump(mode="json", exclude_none=True),
        )
        return parse(resp, JupyterService)
