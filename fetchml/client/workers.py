"""The worker protocol, from the worker's side."""

from __future__ import annotations

from typing import Any

from fetchml.client.base import DomainClient, parse, segment
from fetchml.core.models import Task
from fetchml.core.protocol import (
    ActiveAttempt,
    Assignment,
    EndedAttempt,
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

    def heartbeat(
        self,
        worker_id: str,
        active: list[ActiveAttempt],
        *,
        stopping: bool = False,
        timeout: float | None = None,
    ) -> HeartbeatResponse:
        """`stopping`: the worker shuts down and takes no new work. `timeout`: seconds for this
        request (default: the client's)."""
        body = HeartbeatRequest(active=active, stopping=stopping).model_dump(mode="json")
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        resp = self._t.request("POST", f"/v1/workers/{segment(worker_id)}/heartbeat", json=body, **extra)
        return parse(resp, HeartbeatResponse)

    def claim(self, worker_id: str, wait: float, ended: EndedAttempt | None = None) -> Assignment | None:
        """Long poll: an assignment as soon as one fits, or None after `wait` seconds. `ended`:
        the last report of an attempt of this worker, applied first (only to a server whose
        registration answer says `claim_takes_report`; others ignore it)."""
        body = None if ended is None else {"ended": ended.model_dump(mode="json", exclude_none=True)}
        resp = self._t.request(
            "POST",
            f"/v1/workers/{segment(worker_id)}/claim",
            params={"wait": wait},
            json=body,
            timeout=wait + 30,
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
