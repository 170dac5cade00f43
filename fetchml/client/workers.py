"""The worker protocol, from the worker's side."""

from __future__ import annotations

from fetchml.client.base import DomainClient, parse, segment
from fetchml.core.models import Task
from fetchml.core.protocol import (
    ActiveAttempt,
    Assignment,
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    StatusReport,
)


class WorkersClient(DomainClient):
    def register(self, request: RegisterWorkerRequest) -> RegisterWorkerResponse:
        resp = self._t.request("POST", "/v1/workers/register", json=request.model_dump(mode="json"))
        return parse(resp, RegisterWorkerResponse)

    def heartbeat(self, worker_id: str, active: list[ActiveAttempt]) -> HeartbeatResponse:
        body = HeartbeatRequest(active=active).model_dump(mode="json")
        resp = self._t.request("POST", f"/v1/workers/{segment(worker_id)}/heartbeat", json=body)
        return parse(resp, HeartbeatResponse)

    def claim(self, worker_id: str, wait: float) -> Assignment | None:
        """Long poll: an assignment as soon as one fits, or None after `wait` seconds."""
        resp = self._t.request(
            "POST", f"/v1/workers/{segment(worker_id)}/claim", params={"wait": wait}, timeout=wait + 30
        )
        if resp.status_code == 204:
            return None
        return parse(resp, Assignment)

    def report(self, task_id: str, report: StatusReport) -> Task:
        resp = self._t.request(
            "POST",
            f"/v1/tasks/{segment(task_id)}/report",
            json=report.model_dump(mode="json", exclude_none=True),
        )
        return parse(resp, Task)
