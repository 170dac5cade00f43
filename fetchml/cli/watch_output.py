"""What both views of `fetchml watch` print besides the live board: notes on stderr, events as
JSON lines, and one line per event for people."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fetchml.client.streams import StreamEvent

ACTIVE = ("preparing", "running", "collecting")


def _say(message: str) -> None:
    sys.stderr.write(f"fetchml: {message}\n")
    sys.stderr.flush()


def _print_event(ev: StreamEvent) -> None:
    body: dict[str, Any] = {"event": ev.event}
    if ev.id is not None:
        body["id"] = ev.id
    body["data"] = ev.data
    sys.stdout.write(json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _reconnecting(attempt: int, exc: Exception) -> None:
    _say(f"stream interrupted ({exc}); resuming (try {attempt})")


def describe(ev: StreamEvent) -> str:
    """One line for an event, for people."""
    d = ev.data
    name = ev.event
    tid = d.get("task_id", "")
    if name in ("task_transition", "transition"):
        where = f" on {d['worker_id']}" if d.get("worker_id") and d.get("to") in ACTIVE else ""
        tail = ""
        if d.get("exit_code") is not None:
            tail += f" exit {d['exit_code']}"
        if d.get("error"):
            tail += f": {d['error']}"
        return f"task {tid} ({d.get('job_name', '?')}) {d.get('from') or 'new'} -> {d.get('to')}{where}{tail}"
    if name == "priority_changed":
        return f"task {tid} priority {d.get('from')} -> {d.get('to')}"
    if name == "task_placement":
        return f"task {tid} placed on {d.get('worker_id') or '-'}"
    if name.startswith("worker_"):
        why = f" ({d['reason']})" if d.get("reason") else ""
        return f"worker {d.get('worker_id')} {d.get('status')}{why}"
    if name == "queue_depth":
        return f"queue depth {d.get('depth')}"
    if name == "reservation_changed":
        return f"reservation {d.get('reservation_id')} {d.get('status')} ({d.get('user_id')})"
    return name
