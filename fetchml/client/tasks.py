from __future__ import annotations

import uuid
from typing import Any

from fetchml.client.base import DomainClient, ServerUnreachableError, parse, segment
from fetchml.core.enums import TaskStatus
from fetchml.core.models import CreateTaskRequest, Task, TaskList

IDEMPOTENCY_HEADER = "Idempotency-Key"


class TasksClient(DomainClient):
    def create(self, request: CreateTaskRequest, *, idempotency_key: str | None = None) -> Task:
        """Submit once, whatever the network does: every call sends an Idempotency-Key (a fresh
        uuid4 unless given) and, when no answer came back (timeout, lost connection), sends the
        same request with the same key once more. The server creates at most one task per key;
        the retry gets the task the first attempt created, if it did."""
        body = request.model_dump(mode="json", exclude_none=True)
        key = idempotency_key or str(uuid.uuid4())
        headers = {IDEMPOTENCY_HEADER: key}
        try:
            return parse(self._t.request("POST", "/v1/tasks", json=body, headers=headers), Task)
        except ServerUnreachableError:
            pass
        try:
            return parse(self._t.request("POST", "/v1/tasks", json=body, headers=headers), Task)
        except ServerUnreachableError as exc:
            raise type(exc)(
                f"{exc.message}. Tried twice with Idempotency-Key {key}; the task may or may not "
                "have been created: check with `fetchml list` (or GET /v1/tasks), or submit "
                "again with the same key, which cannot create a second task"
            ) from exc

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
