from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import Parameter

from fetchml.core.enums import TaskStatus
from fetchml.core.models import MAX_INT32, CreateTaskRequest, Task, TaskList
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import USERS


class TaskController(Controller):
    path = "/v1/tasks"
    opt = USERS
    tags = ["Tasks"]

    @get("/", summary="List tasks, newest first")
    async def list_tasks(
        self,
        request: Request[Any, Any, Any],
        status: TaskStatus | None = None,
        user_id: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 50,
        offset: Annotated[int, Parameter(ge=0, le=MAX_INT32)] = 0,
    ) -> TaskList:
        # Everyone sees the queue; a task's contents only its owner and admins (see TaskService).
        return await services_of(request).tasks.list(
            status=status, user_id=user_id, limit=limit, offset=offset, viewer=principal_of(request)
        )

    @post("/", summary="Submit a task", status_code=201, opt={"errors": (404, 409)})
    async def create_task(
        self,
        request: Request[Any, Any, Any],
        data: CreateTaskRequest,
        idempotency_key: Annotated[
            str | None,
            Parameter(
                header="Idempotency-Key",
                required=False,
                description="Up to 255 printable ASCII characters. A retry with the same key and "
                "body returns the task the first request created (header Idempotent-Replayed: "
                "true); the same key with another body is 409. Kept for "
                "FETCHML_IDEMPOTENCY_RETENTION_HOURS (default 24).",
            ),
        ] = None,
    ) -> Task:
        task, replayed = await services_of(request).tasks.submit(
            principal_of(request), data, client_ip(request), idempotency_key
        )
        # A replay answers as the original did (201): a client that lost the first answer
        # cannot tell the difference, except by the header.
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        # Declared as Task (the documented schema); a Response passes through Litestar unchanged.
        return Response(task, status_code=201, headers=headers)  # type: ignore[return-value]

    @get("/{task_id:str}", summary="Get a task")
    async def get_task(self, request: Request[Any, Any, Any], task_id: str) -> Task:
        return await services_of(request).tasks.get(task_id, viewer=principal_of(request))

    @delete("/{task_id:str}", summary="Cancel a task", opt={"errors": (409,)})
    async def cancel_task(self, request: Request[Any, Any, Any], task_id: str) -> None:
        await services_of(request).tasks.cancel(principal_of(request), task_id, client_ip(request))
