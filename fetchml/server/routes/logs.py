from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Stream

from fetchml.core.errors import BadRequestError
from fetchml.core.protocol import LOG_NEXT_LINE_HEADER, LOG_QUOTA_HEADER, LogChunk, LogPage
from fetchml.server.context import principal_of, services_of
from fetchml.server.security import READERS, WORKERS


class LogController(Controller):
    path = "/v1/tasks/{task_id:str}/logs"
    tags = ["Logs"]

    @post(
        "/",
        status_code=204,
        opt={**WORKERS, "errors": (409,)},
        # The handler returns a Response (for its headers): without this, Litestar would
        # document the 204 as a JSON body.
        responses={204: ResponseSpec(data_container=None, description="Appended; no body")},
        summary="Append log lines of an attempt (worker)",
        description=(
            "204 without a body. `X-Fetchml-Log-Next-Line` is the attempt's next line number; "
            "`X-Fetchml-Log-Quota: reached` says the task's log quota is spent (later lines are "
            "acknowledged and dropped). A gap (`start_line` past the next line) is 422, a stale "
            "attempt 409."
        ),
    )
    async def append(self, request: Request[Any, Any, Any], task_id: str, data: LogChunk) -> Response[None]:
        result = await services_of(request).logs.append(principal_of(request), task_id, data)
        return Response(
            content=None,
            status_code=204,
            headers={
                LOG_NEXT_LINE_HEADER: str(result.next_line),
                LOG_QUOTA_HEADER: "reached" if result.quota_reached else "ok",
            },
        )

    @get(
        "/",
        opt=READERS,
        summary="Read a task's log",
        description=(
            "Lines of all attempts in order. `offset` starts at a line index, `tail` returns the last N lines. "
            "With `follow=true` the response is text/plain, one line per line, streamed until the task has "
            "ended and every line was sent."
        ),
    )
    async def read(
        self,
        request: Request[Any, Any, Any],
        task_id: str,
        offset: Annotated[int | None, Parameter(ge=0, le=2**31 - 1)] = None,
        tail: Annotated[int | None, Parameter(ge=0, le=100_000)] = None,
        follow: bool = False,
    ) -> Response[LogPage]:
        if offset is not None and tail is not None:
            raise BadRequestError("offset and tail: give one or the other")  # parameters: 400
        # A task's log is its owner's (and admins'): 404 for no such task, else 403.
        await services_of(request).tasks.check_contents(principal_of(request), task_id)
        logs = services_of(request).logs
        if not follow:
            return Response(content=await logs.page(task_id, offset=offset, tail=tail))
        await logs.page(task_id, offset=0, limit=0)  # a 404 must happen before the stream starts

        async def lines() -> AsyncIterator[bytes]:
            async for batch in logs.follow(task_id, offset=offset, tail=tail):
                yield ("\n".join(batch) + "\n").encode()

        return Stream(lines(), media_type="text/plain; charset=utf-8")  # type: ignore[return-value]
