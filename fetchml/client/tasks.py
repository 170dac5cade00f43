from __future__ import annotations

from typing import Any

from fetchml.client.base import DomainClient
from fetchml.core.enums import TaskStatus
from fetchml.core.models import CreateTaskRequest, Task, TaskList


class TasksClient(DomainClient):
    def create(self, request: CreateTaskRequest) -> Task:
        body = request.model_dump(mode="json", exclude_none=True)
        return Task.model_validate(self._t.request("POST", "/v1/tasks", json=body).json())

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
        return TaskList.model_validate(self._t.request("GET", "/v1/tasks", params=params).json())

    def get(self, task_id: str) -> Task:
        return Task.model_validate(self._t.request("GET", f"/v1/tasks/{task_id}").json())

    def cancel(self, task_id: str) -> None:
        self._t.request("DELETE", f"/v1/tasks/{task_id}")
