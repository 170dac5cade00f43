from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import Parameter

from fetchml.core.enums import TaskStatus
from fetchml.core.models import MAX_INT32, CreateTaskRequest, Task, TaskList
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import USERS


class TaskController(Controller):
    path = "/v1/tasks"
    guards = USERS
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

    @post("/", summary="Submit a task")
    async def create_task(self, request: Request[Any, Any, Any], data: CreateTaskRequest) -> Task:
        return await services_of(request).tasks.create(principal_of(request), data, client_ip(request))

    @get("/{task_id:str}", summary="Get a task")
    async def get_task(self, request: Request[Any, Any, Any], task_id: str) -> Task:
        return await services_of(request).tasks.get(task_id, viewer=principal_of(request))

    @delete("/{task_id:str}", summary="Cancel a task")
    async def cancel_task(self, request: Request[Any, Any, Any], task_id: str) -> None:
        await services_of(request).tasks.cancel(principal_of(request), task_id, client_ip(request))
