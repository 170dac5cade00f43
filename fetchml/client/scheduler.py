"""Scheduler and worker management (admin keys), and task priorities (owner or admin)."""

from __future__ import annotations

from fetchml.client.base import DomainClient, parse, parse_list, segment
from fetchml.core.models import SchedulerStatus, Task
from fetchml.core.protocol import WorkerInfo


class SchedulerClient(DomainClient):
    def status(self) -> SchedulerStatus:
        return parse(self._t.request("GET", "/v1/scheduler/status"), SchedulerStatus)

    def workers(self) -> list[WorkerInfo]:
        return parse_list(self._t.request("GET", "/v1/scheduler/workers"), WorkerInfo)

    def worker(self, worker_id: str) -> WorkerInfo:
        return parse(self._t.request("GET", f"/v1/scheduler/workers/{segment(worker_id)}"), WorkerInfo)

    def drain(self, worker_id: str) -> None:
        """No new assignments; running tasks finish; then the worker goes offline."""
        self._t.request("DELETE", f"/v1/scheduler/workers/{segment(worker_id)}")

    def set_priority(self, task_id: str, priority: int) -> Task:
        resp = self._t.request(
            "PATCH", f"/v1/scheduler/jobs/{segment(task_id)}/priority", json={"priority": priority}
        )
        return parse(resp, Task)
