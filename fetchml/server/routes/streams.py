"""The contract's live streams: two SSE streams and the /ws WebSocket (docs/events.md).

Handlers open the stream through the service (which authorises, applies the per-key cap and
answers 404 before anything is sent), then only encode what it yields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, get
from litestar.response import Stream as StreamResponse

from fetchml.core.errors import BadRequestError
from fetchml.core.events import KEEPALIVE_FRAME, FeedEvent, sse_frame
from fetchml.server.context import principal_of, services_of
from fetchml.server.security import ADMIN_ONLY, USERS
from fetchml.services.streams import End, KeepAlive, Resync, Snapshot, Stream, StreamItem

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Reconnect after this many milliseconds (the `retry:` field browsers' EventSource honours).
RETRY_MS = 2000


def last_event_id(request: Request[Any, Any, Any]) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadRequestError("Last-Event-ID: expected an event id (an integer)") from None
    if value < 0 or value > 2**62:
        raise BadRequestError("Last-Event-ID: out of range")
    return value


def encode(item: StreamItem, *, job: bool) -> bytes:
    if isinstance(item, FeedEvent):
        # The job stream names a task's transition plainly: the stream is about that task.
        return item.sse("transition" if job and item.type.value == "task_transition" else None)
    if isinstance(item, KeepAlive):
        return KEEPALIVE_FRAME
    if isinstance(item, Snapshot):
        return sse_frame("snapshot", item.data, item.last_event_id)
    if isinstance(item, End):
        return sse_frame("end", item.data)
    if isinstance(item, Resync):
        return sse_frame("resync", {"reason": "slow_consumer", "detail": "reconnect with Last-Event-ID"})
    raise TypeError(item)


def sse_response(request: Request[Any, Any, Any], stream: Stream, *, job: bool) -> StreamResponse:
    metrics = request.app.state["metrics"]

    async def frames() -> AsyncIterator[bytes]:
        with metrics.open_stream("sse"):
            try:
                yield f"retry: {RETRY_MS}\n\n".encode()
                # One chunk per batch: each chunk is a write (a syscall) per stream.
                async for batch in stream.batches():
                    yield b"".join([encode(item, job=job) for item in batch])
            finally:
                stream.close()

    return StreamResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


@get(
    "/v1/scheduler/status/stream",
    tags=["Scheduler"],
    opt={**ADMIN_ONLY, "errors": (400, 429)},
    summary="SSE stream of scheduler state changes",
    description=(
        "Opens with a `snapshot` (status, workers, queue head), then one event per committed change. "
        "`Last-Event-ID` resumes after that id. Event names and payloads: docs/events.md."
    ),
)
async def scheduler_status_stream(request: Request[Any, Any, Any]) -> StreamResponse:
    stream = await services_of(request).streams.open_scheduler(principal_of(request), last_event_id(request))
    return sse_response(request, stream, job=False)


@get(
    "/v1/scheduler/jobs/{task_id:str}/stream",
    tags=["Scheduler"],
    opt={**USERS, "errors": (400, 404, 429)},
    summary="SSE stream of job progress",
    description=(
        "Opens with a `snapshot` of the task, then `transition` and `priority_changed` events; "
        "ends with `end` after the task ends. The task's owner or an admin. docs/events.md."
    ),
)
async def job_stream(request: Request[Any, Any, Any], task_id: str) -> StreamResponse:
    stream = await services_of(request).streams.open_job(
        principal_of(request), task_id, last_event_id(request)
    )
    return sse_response(request, stream, job=True)
