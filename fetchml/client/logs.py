from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fetchml.client.base import DomainClient, parse, segment
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

    def follow(self, task_id: str, *, offset: int | None = None, tail: int | None = None) -> Iterator[str]:
        """Lines as the task prints them; ends when the task has ended and all lines are in."""
        params: dict[str, Any] = {"follow": "true"}
        if offset is not None:
            params["offset"] = offset
        if tail is not None:
            params["tail"] = tail
        with self._t.stream("GET", f"/v1/tasks/{segment(task_id)}/logs", params=params, timeout=None) as resp:
            yield from resp.iter_lines()
