from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fetchml.client.base import DomainClient, parse, segment
from fetchml.core.protocol import LogChunk, LogPage


class LogsClient(DomainClient):
    def append(self, task_id: str, attempt: int, start_line: int, lines: list[str]) -> None:
        body = LogChunk(attempt=attempt, start_line=start_line, lines=lines).model_dump(mode="json")
        self._t.request("POST", f"/v1/tasks/{segment(task_id)}/logs", json=body)

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
