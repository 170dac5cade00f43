"""What the view state holds, and the upserts every input goes through.

`StateBase` owns the collections (workers, tasks, the queue index, running, ended,
reservations) and the few operations that keep them consistent: a Task's, worker's or
reservation's JSON merged into its view, and a task put in the pane its status says and on the
workers and GPUs it holds. The reducer (`ViewState`, fetchml/tui/state.py) decides which inputs
call them; `StateReads` (fetchml/tui/state_reads.py) is what the panes read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fetchml.tui.models import (
    ACTIVE,
    ENDED,
    ENDED_LIMIT,
    INACTIVE_RESERVATIONS_LIMIT,
    PANES,
    QUEUE,
    QUEUED,
    RUNNING,
    STATUS,
    TERMINAL,
    TIMELINE_LIMIT,
    WORKERS,
    ReservationView,
    Step,
    TaskView,
    Viewer,
    WorkerView,
    _int,
    _later,
    _nodes,
    parse_time,
)
from fetchml.tui.queue_index import Aging, QueueIndex


@dataclass
class Changes:
    """What one update touched: panes to repaint and tasks whose detail changed."""

    panes: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.panes or self.tasks)

    def merge(self, other: Changes) -> None:
        self.panes |= other.panes
        self.tasks |= other.tasks


class StateBase:
    """The collections and their upserts. Its constructor is `ViewState`'s."""

    def __init__(
        self,
        viewer: Viewer | None = None,
        *,
        clock: Callable[[], float] = time.time,
        ended_limit: int = ENDED_LIMIT,
    ) -> None:
        self.viewer = viewer or Viewer()
        self.clock = clock
        self.ended_limit = ended_limit
        self.workers: dict[str, WorkerView] = {}
        self.tasks: dict[str, TaskView] = {}
        self.queue = QueueIndex()
        self.running: dict[str, None] = {}  # insertion order: the order they started
        self.ended: OrderedDict[str, None] = OrderedDict()
        self.reservations: dict[str, ReservationView] = {}
        self.aging = Aging(ref=clock())
        self.status: dict[str, Any] = {}
        self.depth: int | None = None  # the server's queued count (queue_depth), when known
        self.by_priority: dict[str, int] = {}
        self.last_event_id: int | None = None
        self.events_applied = 0
        self.note = ""
        # Bumped on every change of a pane: widgets cache what they derive per version.
        self.versions: dict[str, int] = dict.fromkeys(PANES, 0)
        self._cache: dict[str, tuple[Any, Any]] = {}

    # --- what the viewer may do ---------------------------------------------------------------

    @property
    def may_drain(self) -> bool:
        return self.viewer.is_admin

    @property
    def sees_scheduler(self) -> bool:
        """Workers, reservations and audit are admin routes (403 for a user key)."""
        return self.viewer.is_admin

    def owns(self, t: TaskView) -> bool:
        return self.viewer.user_id is not None and t.user_id == self.viewer.user_id

    def may_change(self, t: TaskView) -> bool:
        """Cancel and priority: admins any task, users their own."""
        return self.viewer.is_admin or self.owns(t)

    # --- internals ----------------------------------------------------------------------------

    def _bump(self, panes: Iterable[str]) -> None:
        for p in panes:
            self.versions[p] = self.versions.get(p, 0) + 1

    def _panes_of(self, t: TaskView | None) -> set[str]:
        if t is None:
            return set()
        if t.id in self.queue:
            return {QUEUE, STATUS}
        if t.id in self.running:
            return {RUNNING, WORKERS, STATUS}
        if t.id in self.ended:
            return {ENDED}
        return set()

    def _step(self, t: TaskView, step: Step) -> None:
        if step.event_id is not None and any(s.event_id == step.event_id for s in t.timeline[-4:]):
            return  # the same event from two streams
        t.timeline.append(step)
        if len(t.timeline) > TIMELINE_LIMIT:
            del t.timeline[: len(t.timeline) - TIMELINE_LIMIT]

    def _put_worker(self, w: dict[str, Any]) -> WorkerView:
        wid = str(w["id"])
        caps = w.get("capabilities") or {}
        slots = w.get("slots") or {}
        old = self.workers.get(wid)
        view = WorkerView(
            id=wid,
            name=str(w.get("name") or wid),
            status=str(w.get("status") or "active"),
            slots_total=_int(slots.get("batch_total")) + _int(slots.get("service_total")),
            gpu_indices=tuple(
                sorted(
                    g["index"]
                    for g in caps.get("gpus") or []
                    if isinstance(g, dict) and isinstance(g.get("index"), int)
                )
            )
            or tuple(range(_int(caps.get("gpu_count")))),
            gpu_type=caps.get("gpu_type"),
            connected_at=parse_time(w.get("connected_at")),
            last_seen=parse_time(w.get("last_heartbeat")) or parse_time(w.get("connected_at")),
        )
        if view.status == "draining":
            view.drain = "draining"
        if old is not None:
            view.tasks, view.gpu_tasks = old.tasks, old.gpu_tasks
            view.drain = view.drain or (old.drain if view.status == "offline" else "")
        self.workers[wid] = view
        return view

    def _put_reservation(self, r: dict[str, Any]) -> None:
        rid = str(r["id"])
        old = self.reservations.get(rid)
        gpus = r.get("gpus")
        self.reservations[rid] = ReservationView(
            id=rid,
            user_id=str(r.get("user_id") or (old.user_id if old else "")),
            status=str(r.get("status") or "active"),
            gpu_count=_int(r.get("gpu_count"), old.gpu_count if old else 0),
            gpu_type=r.get("gpu_type", old.gpu_type if old else None),
            node_count=_int(r.get("node_count"), old.node_count if old else 1),
            expires_at=parse_time(r.get("expires_at")) or (old.expires_at if old else None),
            gpus=dict(gpus) if isinstance(gpus, dict) else (old.gpus if old else {}),
        )
        inactive = [k for k, v in self.reservations.items() if v.status != "active"]
        for k in inactive[: max(0, len(inactive) - INACTIVE_RESERVATIONS_LIMIT)]:
            del self.reservations[k]

    def _merge_task(self, task: dict[str, Any], *, live: bool) -> TaskView:
        """A Task's JSON into its view (no pane moves)."""
        tid = str(task["id"])
        t = self.tasks.get(tid)
        if t is None:
            t = self.tasks[tid] = TaskView(id=tid)
        t.live = live or t.live
        t.fields = dict(task)
        t.job_name = str(task.get("job_name") or t.job_name)
        t.user_id = str(task.get("user_id") or t.user_id)
        t.status = str(task.get("status") or t.status)
        t.priority = _int(task.get("priority"), t.priority)
        aged = task.get("priority_aged")
        t.priority_aged = float(aged) if isinstance(aged, (int, float)) else float(t.priority)
        t.created_at = parse_time(task.get("created_at")) or t.created_at
        t.started_at = parse_time(task.get("started_at")) or (t.started_at if t.status in ACTIVE else None)
        t.ended_at = parse_time(task.get("ended_at"))
        t.gpu = _int(task.get("gpu"))
        t.node_count = _int(task.get("node_count"), 1)
        t.pending_reason = task.get("pending_reason")
        t.attempt = _int(task.get("attempt"), t.attempt)
        t.retry_count = _int(task.get("retry_count"), t.retry_count)
        t.exit_code = task.get("exit_code") if isinstance(task.get("exit_code"), int) else None
        t.error = task.get("error")
        t.cancel_requested = bool(task.get("cancel_requested"))
        if not t.timeline:
            created = parse_time(task.get("created_at"))
            t.timeline.append(Step(created, QUEUED, None, note="submitted"))
            if t.started_at is not None:
                t.timeline.append(
                    Step(t.started_at, "running", QUEUED, worker_id=task.get("worker_id"), note="started")
                )
            if t.status in TERMINAL:
                t.timeline.append(
                    Step(t.ended_at, t.status, None, note=str(t.error or f"exit {t.exit_code}"))
                )
        return t

    def _put_task(self, task: dict[str, Any], *, live: bool) -> TaskView:
        t = self._merge_task(task, live=live)
        nodes = _nodes(task.get("node_assignments"))
        if not nodes and task.get("worker_id"):
            nodes = ((str(task["worker_id"]), tuple(task.get("assigned_gpus") or ())),)
        self._settle(t, task.get("worker_id"), nodes, None)
        return t

    def _settle(
        self,
        t: TaskView,
        worker_id: Any,
        nodes: tuple[tuple[str, tuple[int, ...]], ...] | None,
        at: float | None,
    ) -> None:
        """Put the task in the pane its status says, and on the workers and GPUs it holds."""
        if t.status in ACTIVE:
            if nodes is not None or isinstance(worker_id, str):
                self._unplace(t)
                if isinstance(worker_id, str):
                    t.worker_id = worker_id
                if nodes is not None:
                    t.nodes = nodes
                elif t.worker_id and not t.nodes:
                    t.nodes = ((t.worker_id, ()),)
            self._place(t, at)
            if t.id in self.queue:
                self.queue.remove(t.id)
            self.ended.pop(t.id, None)
            self.running.setdefault(t.id, None)
            return
        self._unplace(t)
        self.running.pop(t.id, None)
        if t.status == QUEUED:
            t.worker_id, t.nodes = None, ()
            self.ended.pop(t.id, None)
            self.queue.add(t.id, self.aging.score(t.priority, t.created_at), t.created_at)
            return
        self.queue.remove(t.id)
        if t.status in TERMINAL:
            self.ended.pop(t.id, None)
            self.ended[t.id] = None
            while len(self.ended) > self.ended_limit:
                old, _ = self.ended.popitem(last=False)
                if old not in self.queue and old not in self.running:
                    self.tasks.pop(old, None)

    def _place(self, t: TaskView, at: float | None) -> None:
        for wid, gpus in t.nodes or (((t.worker_id, ()),) if t.worker_id else ()):
            w = self.workers.get(wid)
            if w is None:
                w = self.workers[wid] = WorkerView(id=wid, name=wid)
            w.tasks.add(t.id)
            for g in gpus:
                w.gpu_tasks[g] = t.id
            w.last_seen = _later(w.last_seen, at)

    def _unplace(self, t: TaskView) -> None:
        for wid, gpus in t.nodes or (((t.worker_id, ()),) if t.worker_id else ()):
            w = self.workers.get(wid)
            if w is None:
                continue
            w.tasks.discard(t.id)
            for g in gpus:
                if w.gpu_tasks.get(g) == t.id:
                    del w.gpu_tasks[g]
