"""The live view of `fetchml watch` without TASK_ID: a board built from the scheduler's snapshot,
kept current by its events, rendered as tables."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fetchml.cli.common import STATUS_STYLES, table, text
from fetchml.cli.watch_output import ACTIVE, describe
from fetchml.cli.workers import WORKER_STYLES

if TYPE_CHECKING:
    from fetchml.client.streams import StreamEvent

RECENT = 8  # events listed at the bottom of the live view


@dataclass
class Board:
    """What the live view shows, built from a snapshot and kept current by events."""

    server_url: str = ""
    last_event_id: int | None = None
    events: int = 0
    depth: int = 0
    by_priority: dict[str, int] = field(default_factory=dict)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    recent: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=RECENT))
    note: str = ""

    def apply(self, ev: StreamEvent) -> None:
        d = ev.data
        self.events += 1
        if ev.id is not None:
            self.last_event_id = ev.id
        handler = getattr(self, "_on_" + ev.event, None)
        if handler is not None:
            handler(d)
        if ev.event != "snapshot":
            self.recent.appendleft((str(d.get("at", ""))[11:19], describe(ev)))

    def _on_snapshot(self, d: dict[str, Any]) -> None:
        status = d.get("status") or {}
        self.depth = int(status.get("batch_queue_depth", 0)) + int(status.get("service_queue_depth", 0))
        head = d.get("queue") or []
        # The snapshot lists the queue's head only: counts by priority are whole when it is all.
        self.by_priority = _count_priorities(head) if len(head) >= self.depth else {}
        self.workers = {w["id"]: w for w in d.get("workers") or []}
        self.tasks = {}
        self.note = "resumed too late: this is a fresh snapshot" if d.get("reason") else ""

    def seed(self, active: list[dict[str, Any]], queued: list[dict[str, Any]] | None) -> None:
        """Tasks read once after the snapshot (it has no running tasks, and a long queue's
        priorities only by its head). Later events keep them current."""
        for t in active:
            self.tasks.setdefault(t["id"], _task_row(t))
        if queued is not None and not self.by_priority:
            self.by_priority = _count_priorities(queued)

    def _on_task_transition(self, d: dict[str, Any]) -> None:
        tid = d.get("task_id")
        if not tid:
            return
        if d.get("to") in ACTIVE:
            row = self.tasks.setdefault(tid, {"id": tid})
            row.update(
                {k: d[k] for k in ("job_name", "user_id", "priority", "worker_id") if d.get(k) is not None}
            )
            row["status"] = d["to"]
        else:
            self.tasks.pop(tid, None)

    def _on_priority_changed(self, d: dict[str, Any]) -> None:
        row = self.tasks.get(str(d.get("task_id")))
        if row is not None:
            row["priority"] = d.get("to")

    def _on_task_placement(self, d: dict[str, Any]) -> None:
        row = self.tasks.get(str(d.get("task_id")))
        if row is not None and d.get("worker_id"):
            row["worker_id"] = d["worker_id"]

    def _on_worker(self, d: dict[str, Any]) -> None:
        wid = d.get("worker_id")
        if wid:
            self.workers.setdefault(wid, {"id": wid, "name": d.get("name", wid)})["status"] = d.get("status")

    _on_worker_connected = _on_worker
    _on_worker_draining = _on_worker
    _on_worker_disconnected = _on_worker

    def _on_queue_depth(self, d: dict[str, Any]) -> None:
        self.depth = int(d.get("depth", 0))
        self.by_priority = {str(k): int(v) for k, v in (d.get("by_priority") or {}).items()}

    def render(self) -> Any:
        from rich.console import Group

        active_workers = sum(1 for w in self.workers.values() if w.get("status") == "active")
        head = text(
            f"{self.server_url}  event #{self.last_event_id if self.last_event_id is not None else '-'}  "
            f"{self.depth} queued, {len(self.tasks)} running, {active_workers} workers active"
            + (f"  ({self.note})" if self.note else ""),
            "bold",
        )

        queue = table(("PRIORITY", {"justify": "right"}), ("QUEUED", {"justify": "right"}))
        for prio, n in sorted(self.by_priority.items(), key=lambda kv: -int(kv[0])):
            queue.add_row(prio, str(n))
        if not self.by_priority and self.depth:
            queue.add_row("all", str(self.depth))

        workers = table(
            ("WORKER", {"no_wrap": True}),
            ("STATUS", {}),
            ("GPUS", {"justify": "right"}),
            ("TASKS", {"justify": "right"}),
        )
        on: dict[str, int] = {}
        for t in self.tasks.values():
            if t.get("worker_id"):
                on[t["worker_id"]] = on.get(t["worker_id"], 0) + 1
        for wid, w in sorted(self.workers.items()):
            status = str(w.get("status") or "-")
            gpus = (w.get("capabilities") or {}).get("gpu_count")
            workers.add_row(
                text(wid), text(status, WORKER_STYLES.get(status, "")), text(gpus), str(on.get(wid, 0))
            )

        tasks = table(
            ("TASK", {"no_wrap": True}),
            ("JOB", {"overflow": "fold"}),
            ("USER", {}),
            ("STATUS", {}),
            ("WORKER", {}),
            ("PRIO", {"justify": "right"}),
        )
        for tid, t in sorted(self.tasks.items()):
            status = str(t.get("status") or "-")
            tasks.add_row(
                text(tid),
                text(t.get("job_name")),
                text(t.get("user_id")),
                text(status, STATUS_STYLES.get(status, "")),
                text(t.get("worker_id")),
                text(t.get("priority")),
            )

        recent = table(("AT", {"no_wrap": True}), ("EVENT", {"overflow": "fold"}))
        for at, line in self.recent:
            recent.add_row(text(at), text(line))
        return Group(
            head,
            text("Queue", "bold"),
            queue,
            text("Workers", "bold"),
            workers,
            text("Running", "bold"),
            tasks,
            text("Latest events", "bold"),
            recent,
        )


def _count_priorities(tasks: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tasks:
        key = str(t.get("priority"))
        out[key] = out.get(key, 0) + 1
    return out


def _task_row(t: dict[str, Any]) -> dict[str, Any]:
    return {k: t.get(k) for k in ("id", "job_name", "user_id", "status", "worker_id", "priority")}
