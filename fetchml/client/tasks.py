from __future__ import annotations

from typing import Any

from fetchml.client.base import DomainClient, parse, segment
from fetchml.core.enums import TaskStatus
from fetchml.core.models import CreateTaskRequest, Task, TaskList


class TasksClient(DomainClient):
    def create(self, request: CreateTaskRequest) -> Task:
        body = request.model_dump(mode="json", exclude_none=True)
        return parse(self._t.request("POST", "/v1/tasks", json=body), Task)

    def list(
        self,
        *,
        status: TaskStatus | str | None = None,
        user_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> TaskList:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = str(status)
        if user_id is not None:
            params["user_id"] = user_id
        return parse(self._t.request("GET", "/v1/tasks", params=params), TaskList)

    def get(self, task_id: str) -> Task:
        return parse(self._t.request("GET", f"/v1/tasks/{segment(task_id)}"), Task)

    def cancel(self, task_id: str) -> None:
        self._t.request("DELETE", f"/v1/tasks/{segment(task_id)}")
