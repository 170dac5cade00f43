from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from fetchml.client.base import (
    DomainClient,
    ServerUnreachableError,
    Transport,
    abort_response,
    parse,
    segment,
)
from fetchml.core.protocol import LOG_NEXT_LINE_HEADER, LOG_QUOTA_HEADER, LogChunk, LogPage


@dataclass(frozen=True)
class LogAck:
    """The server's answer to an append: the attempt's next line number (None from a server
    that does not say) and whether the task's log quota is spent (later lines are dropped)."""

    next_line: int | None
    quota_reached: bool


class LogsClient(DomainClient):
    def append(self, task_id: str, attempt: int, start_line: int, lines: list[str]) -> LogAck:
        body = LogChunk(attempt=attempt, start_line=start_line, lines=lines).model_dump(mode="json")
        resp = self._t.request("POST", f"/v1/tasks/{segment(task_id)}/logs", json=body)
        try:
            next_line: int | None = int(resp.headers[LOG_NEXT_LINE_HEADER])
        except (KeyError, ValueError):  # an older server says nothing
            next_line = None
        return LogAck(next_line=next_line, quota_reached=resp.headers.get(LOG_QUOTA_HEADER) == "reached")

    def page(self, task_id: str, *, offset: int | None = None, tail: int | None = None) -> LogPage:
        params: dict[str, Any] = {}
        if offset is not None:
            params["offset"] = offset
        if tail is not None:
            params["tail"] = tail
        return parse(self._t.request("GET", f"/v1/tasks/{segment(task_id)}/logs", params=params), LogPage)

    def follower(self, task_id: str, *, offset: int | None = None) -> LogFollow:
        """Like `follow`, as an object whose `close()` stops it from any thread (the TUI's log
        tail stops when another task is selected)."""
        return LogFollow(self._t, task_id, offset)

    def follow(self, task_id: str, *, offset: int | None = None, tail: int | None = None) -> Iterator[str]:
        """Lines as the task prints them; ends when the task has ended and all lines are in."""
        params: dict[str, Any] = {"follow": "true"}
        if offset is not None:
            params["offset"] = offset
        if tail is not None:
            params["tail"] = tail
        with self._t.stream("GET", f"/v1/tasks/{segment(task_id)}/logs", params=params, timeout=None) as resp:
            yield from resp.iter_lines()


class LogFollow:
    """One `follow=true` read of a task's log. Iterate for lines; `close()` ends the iteration
    quietly, also while another thread is blocked reading (the socket is shut down)."""

    def __init__(self, transport: Transport, task_id: str, offset: int | None) -> None:
        self._t = transport
        self.task_id = task_id
        self.offset = offset
        self._closed = threading.Event()
        self._response: httpx.Response | None = None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        self._closed.set()
        resp = self._response
        if resp is not None:
            abort_response(resp)

    def __iter__(self) -> Iterator[str]:
        if self.closed:
            return
        params: dict[str, Any] = {"follow": "true"}
        if self.offset is not None:
            params["offset"] = self.offset
        path = f"/v1/tasks/{segment(self.task_id)}/logs"
        try:
            with self._t.stream("GET", path, params=params, timeout=None) as resp:
                self._response = resp
                if self.closed:
                    return
                yield from resp.iter_lines()
        except (httpx.StreamError, ServerUnreachableError):
            if not self.closed:
                raise
        finally:
            self._response = None
