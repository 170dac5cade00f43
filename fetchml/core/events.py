"""The live feed's events: what changed, after it committed, with an id a client resumes from.

Every committed change to a task, a worker or a reservation (and the queue depth it leaves)
becomes one `FeedEvent`. Ids grow with commit order across every server on one database,
because writes are serialised per database (see fetchml.store.db): a client that has seen id N
has seen every event before it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from fetchml.core.enums import TERMINAL_STATUSES, TaskStatus


class EventType(StrEnum):
    TASK_TRANSITION = "task_transition"
    PRIORITY_CHANGED = "priority_changed"
    TASK_PLACEMENT = "task_placement"  # its workers or GPUs changed while its status did not
    WORKER_CONNECTED = "worker_connected"
    WORKER_DISCONNECTED = "worker_disconnected"
    WORKER_DRAINING = "worker_draining"
    RESERVATION_CHANGED = "reservation_changed"
    QUEUE_DEPTH = "queue_depth"


TASK_EVENTS = frozenset({EventType.TASK_TRANSITION, EventType.PRIORITY_CHANGED, EventType.TASK_PLACEMENT})


@dataclass(frozen=True)
class FeedEvent:
    id: int
    type: EventType
    at: datetime
    data: dict[str, Any]
    task_id: str | None = None
    user_id: str | None = None  # whose it is: a user sees only their own tasks' events
    # Encodings computed once per event and shared by every subscriber (see `sse`).
    _cache: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        """A task transition into completed or failed: the task's last event."""
        return self.type is EventType.TASK_TRANSITION and self.data.get("to") in _TERMINAL

    def payload(self) -> dict[str, Any]:
        """The documented JSON body (docs/events.md): id, type and time, then the fields."""
        return {"id": self.id, "type": self.type.value, "at": self.at.isoformat(), **self.data}

    def sse(self, name: str | None = None) -> bytes:
        """One Server-Sent Events frame: `id:`, `event:` (the type unless renamed) and `data:`."""
        name = name or self.type.value
        frame = self._cache.get(name)
        if frame is None:
            body = json.dumps(self.payload(), separators=(",", ":"))
            frame = f"id: {self.id}\nevent: {name}\ndata: {body}\n\n".encode()
            self._cache[name] = frame
        return frame


_TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)


def sse_frame(name: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


KEEPALIVE_FRAME = b": keep-alive\n\n"


def how_it_ended(data: dict[str, Any]) -> str:
    """completed, failed or cancelled: what a task_complete message reports."""
    if data.get("to") == TaskStatus.COMPLETED.value:
        return "completed"
    return "cancelled" if data.get("cancelled") else "failed"
