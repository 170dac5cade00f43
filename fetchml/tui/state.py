"""The TUI's view state: a reducer from the scheduler's events to the models the panes show.

Plain Python (no Textual, no HTTP), so it is tested on its own (tests/tui/test_state.py). The
app feeds it, on its own thread only:

- `load_snapshot(data)`: the scheduler stream's `snapshot` (docs/events.md). It lists every
  worker but only the head of the queue and no running task, so the app then reads the rest
  once through the client and hands it to `seed(...)`. That happens at (re)connect only: a
  stream resumed with `Last-Event-ID` replays what it missed and needs no reload.
- `apply(name, data, event_id)`: one event (`task_transition`, the job stream's `transition`,
  `priority_changed`, `task_placement`, `worker_*`, `reservation_changed`, `queue_depth`, the
  job stream's `snapshot` and `end`). Each event touches only what it names: the queue is a
  sorted index (insert and remove by bisection), workers and tasks are dicts, and nothing is
  rebuilt per event. `apply` returns which panes changed, so the app repaints only those.

Events are applied as upserts on the state they name (`to: running` puts the task in Running
whatever it was before), so a seed read a moment after the snapshot, with the snapshot's later
events applied on top, converges on the server's state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

# The state is split by concept (models, the queue index, the filter, the upserts, the reads);
# this module is the reducer and the one place the rest of the TUI, the tests and the bench
# import it from, so every name they use is re-exported here.
from fetchml.tui.filters import NO_FILTER, TaskFilter
from fetchml.tui.models import (
    ACTIVE,
    ADMIN,
    ENDED,
    ENDED_LIMIT,
    INACTIVE_RESERVATIONS_LIMIT,
    PANES,
    QUEUE,
    QUEUE_SORTS,
    QUEUED,
    RESERVATIONS,
    RUNNING,
    RUNNING_SORTS,
    STATUS,
    TERMINAL,
    TIMELINE_LIMIT,
    USER,
    WORKER_SORTS,
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
from fetchml.tui.queue_index import Aging, QueueIndex, infer_aging
from fetchml.tui.state_base import Changes
from fetchml.tui.state_reads import StateReads

__all__ = [
    "ACTIVE",
    "ADMIN",
    "ENDED",
    "ENDED_LIMIT",
    "INACTIVE_RESERVATIONS_LIMIT",
    "NO_FILTER",
    "PANES",
    "QUEUE",
    "QUEUED",
    "QUEUE_SORTS",
    "RESERVATIONS",
    "RUNNING",
    "RUNNING_SORTS",
    "STATUS",
    "TERMINAL",
    "TIMELINE_LIMIT",
    "USER",
    "WORKERS",
    "WORKER_SORTS",
    "Aging",
    "Changes",
    "QueueIndex",
    "ReservationView",
    "Step",
    "TaskFilter",
    "TaskView",
    "ViewState",
    "Viewer",
    "WorkerView",
    "infer_aging",
    "parse_time",
]


class ViewState(StateReads):
    # --- loading ------------------------------------------------------------------------------

    def load_snapshot(self, data: dict[str, Any]) -> Changes:
        """The scheduler stream's `snapshot`: the state as of `last_event_id`. Running tasks
        and the queue past its head come with `seed`."""
        self.last_event_id = _int(data.get("last_event_id"), 0)
        self.status = dict(data.get("status") or {})
        st = self.status
        self.depth = _int(st.get("batch_queue_depth")) + _int(st.get("service_queue_depth"))
        self.by_priority = {}
        self.note = (
            "resumed too late to replay what was missed: this is a fresh snapshot"
            if data.get("reason")
            else ""
        )
        self.workers = {}
        for w in data.get("workers") or []:
            if isinstance(w, dict) and w.get("id"):
                self._put_worker(w)
        self.tasks = {tid: self.tasks[tid] for tid in self.ended if tid in self.tasks}
        self.queue.clear()
        self.running.clear()
        head = [t for t in data.get("queue") or [] if isinstance(t, dict) and t.get("id")]
        self.aging = infer_aging(head, self.clock())
        for t in head:
            self._put_task(t, live=True)
        self._bump(PANES)
        return Changes(set(PANES))

    def seed(
        self,
        *,
        queued: Sequence[dict[str, Any]] = (),
        active: Sequence[dict[str, Any]] = (),
        reservations: Sequence[dict[str, Any]] | None = None,
        workers: Sequence[dict[str, Any]] | None = None,
        live: bool = True,
        replace: bool = False,
    ) -> Changes:
        """Tasks (and reservations, workers) read through the client at (re)connect, as Task
        JSON. `replace`: they are the whole queue and running set (a user key's load; an admin
        key's snapshot already reset them). `live`: events will keep them current."""
        now = self.clock()
        if replace:
            self.queue.clear()
            for tid in list(self.running):
                self._unplace(self.tasks[tid])
            self.running.clear()
        if queued:
            self.aging = infer_aging(queued, now)
            # Re-score what the snapshot's head put in, on the same reference time.
            entries: dict[str, TaskView] = {}
            for t in queued:
                view = self._merge_task(t, live=live)
                if view.status == QUEUED:
                    entries[view.id] = view
            for tid in list(self.queue):
                v = self.tasks.get(tid)
                if v is not None:
                    entries.setdefault(tid, v)
            self.queue.load(
                (v.id, self.aging.score(v.priority, v.created_at), v.created_at) for v in entries.values()
            )
            for v in entries.values():
                self._unplace(v)
                self.running.pop(v.id, None)
        for t in active:
            self._put_task(t, live=live)
        if workers is not None:
            for w in workers:
                if isinstance(w, dict) and w.get("id"):
                    self._put_worker(w)
        if reservations is not None:
            self.reservations = {}
            for r in reservations:
                if isinstance(r, dict) and r.get("id"):
                    self._put_reservation(r)
        self._learn_user(list(queued) + list(active))
        self._bump(PANES)
        return Changes(set(PANES))

    def reset(self) -> None:
        """Forget every task, worker and reservation (a user key reloading)."""
        self.workers.clear()
        self.tasks.clear()
        self.queue.clear()
        self.running.clear()
        self.ended.clear()
        self.reservations.clear()
        self.depth = None
        self.by_priority = {}
        self._cache.clear()
        self._bump(PANES)

    def _learn_user(self, tasks: Iterable[dict[str, Any]]) -> None:
        """A user key sees the contents (entrypoint, args, ...) of its own tasks only: the one
        user whose tasks show them is the key's user."""
        if self.viewer.is_admin or self.viewer.user_id is not None:
            return
        owners = {str(t.get("user_id")) for t in tasks if "entrypoint" in t or "args" in t}
        if len(owners) == 1:
            self.viewer = Viewer(self.viewer.role, owners.pop())

    # --- events -------------------------------------------------------------------------------

    def apply(self, name: str, data: dict[str, Any], event_id: int | None = None) -> Changes:
        """One event from the scheduler stream or a job stream."""
        if event_id is not None:
            self.last_event_id = max(event_id, self.last_event_id or 0)
        self.events_applied += 1
        if name == "snapshot":
            if "task" in data:
                return self._job_snapshot(data)
            return self.load_snapshot(data)
        handler = _HANDLERS.get(name)
        if handler is None:
            return Changes()
        ch: Changes = handler(self, data, event_id)
        self._bump(ch.panes)
        return ch

    def _job_snapshot(self, data: dict[str, Any]) -> Changes:
        task = data.get("task")
        if not isinstance(task, dict) or not task.get("id"):
            return Changes()
        before = self._panes_of(self.tasks.get(str(task["id"])))
        view = self._put_task(task, live=not data.get("terminal"))
        panes = before | self._panes_of(view)
        self._bump(panes)
        return Changes(panes, {view.id})

    def _on_transition(self, d: dict[str, Any], event_id: int | None) -> Changes:
        tid = d.get("task_id")
        to = d.get("to")
        if not isinstance(tid, str) or not isinstance(to, str):
            return Changes()
        at = parse_time(d.get("at"))
        t = self.tasks.get(tid)
        before = self._panes_of(t)
        if t is None:
            t = self.tasks[tid] = TaskView(id=tid, created_at=at if d.get("from") is None else None)
        t.live = True
        t.job_name = str(d.get("job_name") or t.job_name)
        t.user_id = str(d.get("user_id") or t.user_id)
        if isinstance(d.get("priority"), int):
            t.priority = d["priority"]
        t.attempt = _int(d.get("attempt"), t.attempt)
        t.retry_count = _int(d.get("retry_count"), t.retry_count)
        note = ""
        if to == QUEUED:
            if t.created_at is None:
                t.created_at = at  # unknown: its FIFO place is taken from now on
            t.pending_reason = d.get("pending_reason")
            note = t.pending_reason or ""
            t.exit_code = t.error = None
            t.ended_at = None
            t.started_at = None
        if to in TERMINAL:
            t.exit_code = d.get("exit_code") if isinstance(d.get("exit_code"), int) else None
            t.error = d.get("error")
            t.ended_at = at
            if d.get("cancelled"):
                note = "cancelled"
            elif t.error:
                note = str(t.error)
            elif t.exit_code is not None:
                note = f"exit {t.exit_code}"
        if to in ACTIVE and t.started_at is None:
            t.started_at = at
        t.status = to
        if t.fields:
            t.fields["status"] = to
        self._step(t, Step(at, to, d.get("from"), event_id, d.get("worker_id"), note))
        self._settle(t, d.get("worker_id"), _nodes(d.get("nodes")) if "nodes" in d else None, at)
        panes = before | self._panes_of(t)
        return Changes(panes, {tid})

    def _on_priority(self, d: dict[str, Any], event_id: int | None) -> Changes:
        tid = d.get("task_id")
        t = self.tasks.get(tid) if isinstance(tid, str) else None
        if t is None or not isinstance(d.get("to"), int):
            return Changes()
        t.priority = d["to"]
        if t.fields:
            t.fields["priority"] = t.priority
        self._step(
            t,
            Step(
                parse_time(d.get("at")),
                t.status,
                t.status,
                event_id,
                note=f"priority {d.get('from')} -> {t.priority}",
            ),
        )
        if t.id in self.queue:
            self.queue.add(t.id, self.aging.score(t.priority, t.created_at), t.created_at)
        return Changes(self._panes_of(t), {t.id})

    def _on_placement(self, d: dict[str, Any], event_id: int | None) -> Changes:
        tid = d.get("task_id")
        t = self.tasks.get(tid) if isinstance(tid, str) else None
        if t is None:
            return Changes()
        self._settle(t, d.get("worker_id"), _nodes(d.get("nodes")), parse_time(d.get("at")))
        return Changes(self._panes_of(t) | {WORKERS}, {t.id})

    def _on_worker(self, d: dict[str, Any], event_id: int | None) -> Changes:
        wid = d.get("worker_id")
        if not isinstance(wid, str):
            return Changes()
        w = self.workers.get(wid)
        if w is None:
            w = self.workers[wid] = WorkerView(id=wid, name=str(d.get("name") or wid))
        status = str(d.get("status") or w.status)
        at = parse_time(d.get("at"))
        if status == "active":
            w.drain = ""
            w.offline_reason = ""
            w.connected_at = at or w.connected_at
            w.last_seen = _later(w.last_seen, at)
        elif status == "draining":
            w.drain = "draining"
            w.last_seen = _later(w.last_seen, at)
        else:
            w.offline_reason = str(d.get("reason") or "")
            if w.drain:
                w.drain = "drained"
        w.status = status
        return Changes({WORKERS, STATUS})

    def _on_reservation(self, d: dict[str, Any], event_id: int | None) -> Changes:
        rid = d.get("reservation_id")
        if not isinstance(rid, str):
            return Changes()
        self._put_reservation({**d, "id": rid})
        return Changes({RESERVATIONS, STATUS})

    def _on_depth(self, d: dict[str, Any], event_id: int | None) -> Changes:
        self.depth = _int(d.get("depth"), 0)
        bp = d.get("by_priority") or {}
        self.by_priority = {str(k): _int(v) for k, v in bp.items()} if isinstance(bp, dict) else {}
        return Changes({STATUS})

    def _on_end(self, d: dict[str, Any], event_id: int | None) -> Changes:
        """The job stream's `end`: its transition came just before; this only makes sure."""
        tid = d.get("task_id")
        t = self.tasks.get(tid) if isinstance(tid, str) else None
        if t is None:
            return Changes()
        t.live = False
        if t.status not in TERMINAL and isinstance(d.get("status"), str):
            return self._on_transition(
                {"task_id": t.id, "from": t.status, "to": d["status"], "exit_code": d.get("exit_code"),
                 "error": d.get("error"), "cancelled": d.get("outcome") == "cancelled"},
                None,
            )  # fmt: skip
        return Changes(set(), {t.id})

    # --- outside updates -----------------------------------------------------------------------

    def set_last_log(self, task_id: str, line: str) -> Changes:
        t = self.tasks.get(task_id)
        if t is None or t.last_log == line:
            return Changes()
        t.last_log = line
        ch = Changes({RUNNING} if task_id in self.running else set(), {task_id})
        self._bump(ch.panes)
        return ch

    def set_fields(self, task: dict[str, Any]) -> Changes:
        """A Task read on its own (the detail pane's GET): its fields, and its state if it moved."""
        tid = task.get("id")
        if not isinstance(tid, str):
            return Changes()
        t = self.tasks.get(tid)
        live = t.live if t is not None else False
        before = self._panes_of(t)
        view = self._put_task(task, live=live)
        panes = before | self._panes_of(view)
        self._bump(panes)
        return Changes(panes, {tid})

    def set_live(self, task_id: str, live: bool) -> None:
        t = self.tasks.get(task_id)
        if t is not None:
            t.live = live


_HANDLERS: dict[str, Callable[[ViewState, dict[str, Any], int | None], Changes]] = {
    "task_transition": ViewState._on_transition,
    "transition": ViewState._on_transition,
    "priority_changed": ViewState._on_priority,
    "task_placement": ViewState._on_placement,
    "worker_connected": ViewState._on_worker,
    "worker_draining": ViewState._on_worker,
    "worker_disconnected": ViewState._on_worker,
    "reservation_changed": ViewState._on_reservation,
    "queue_depth": ViewState._on_depth,
    "end": ViewState._on_end,
}
