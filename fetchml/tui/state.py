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

import bisect
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast

from fetchml.core.aging import DEFAULT_AGING_CAP, DEFAULT_AGING_RATE

QUEUED = "queued"
ACTIVE = frozenset({"preparing", "running", "collecting"})
TERMINAL = frozenset({"completed", "failed"})
ADMIN = "admin"
USER = "user"

# Panes, as `apply` names them in its answer.
WORKERS = "workers"
QUEUE = "queue"
RUNNING = "running"
ENDED = "ended"
RESERVATIONS = "reservations"
STATUS = "status"
PANES = frozenset({WORKERS, QUEUE, RUNNING, ENDED, RESERVATIONS, STATUS})

TIMELINE_LIMIT = 64  # transitions kept per task (a task retried many times keeps its latest)
ENDED_LIMIT = 500  # ended tasks kept for the detail pane, newest last
INACTIVE_RESERVATIONS_LIMIT = 50  # claimed or expired reservations still listed

QUEUE_SORTS = ("schedule", "newest", "user", "gpus")
RUNNING_SORTS = ("started", "worker", "user", "name")
WORKER_SORTS = ("name", "status", "load")

_V = TypeVar("_V")


def parse_time(value: Any) -> float | None:
    """An ISO 8601 time (the API's `Z` or `+00:00`) as POSIX seconds; None for anything else."""
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _later(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def _nodes(raw: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The event's `nodes` or the Task's `node_assignments` as ((worker, (gpu, ...)), ...)."""
    out = []
    for n in raw or ():
        if isinstance(n, dict) and n.get("worker_id"):
            gpus = tuple(g for g in n.get("gpus") or () if isinstance(g, int))
            out.append((str(n["worker_id"]), gpus))
    return tuple(out)


# --- view models ------------------------------------------------------------------------------


@dataclass(slots=True)
class Step:
    """One transition in a task's timeline."""

    at: float | None
    to: str
    from_: str | None = None
    event_id: int | None = None
    worker_id: str | None = None
    note: str = ""


@dataclass(slots=True)
class TaskView:
    id: str
    job_name: str = ""
    user_id: str = ""
    status: str = QUEUED
    priority: int = 0
    priority_aged: float = 0.0
    created_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    worker_id: str | None = None
    nodes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    gpu: int = 0  # GPUs asked for, per node
    node_count: int = 1
    pending_reason: str | None = None
    attempt: int = 0
    retry_count: int = 0
    exit_code: int | None = None
    error: str | None = None
    cancel_requested: bool = False
    last_log: str = ""
    # The Task as last read from the server (GET, a list, a job stream's snapshot); empty for a
    # task known only from events.
    fields: dict[str, Any] = field(default_factory=dict)
    timeline: list[Step] = field(default_factory=list)
    # True while events keep it current: every task under the scheduler stream; with a user key
    # only the tasks whose job stream is open.
    live: bool = False

    @property
    def gpus_text(self) -> str:
        """Where its GPUs are: `w1:0,1 w2:0`; before placement the count asked for."""
        placed = [f"{w}:{','.join(map(str, g))}" for w, g in self.nodes if g]
        if placed:
            return " ".join(placed)
        if self.gpu:
            return f"{self.gpu}" + (f"x{self.node_count}" if self.node_count > 1 else "")
        return "-"

    def age(self, now: float) -> float | None:
        return None if self.created_at is None else max(0.0, now - self.created_at)

    def elapsed(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.started_at)


@dataclass(slots=True)
class WorkerView:
    id: str
    name: str = ""
    status: str = "active"
    slots_total: int = 0
    gpu_indices: tuple[int, ...] = ()
    gpu_type: str | None = None
    connected_at: float | None = None
    # The last sign of life seen: its heartbeat as of the load, then any event from or about it
    # (the stream carries no heartbeats; a worker that stops beating goes offline by an event).
    last_seen: float | None = None
    drain: str = ""  # "", "draining", or "drained" (went offline after a drain)
    offline_reason: str = ""
    tasks: set[str] = field(default_factory=set)
    gpu_tasks: dict[int, str] = field(default_factory=dict)

    @property
    def slots_used(self) -> int:
        return len(self.tasks)

    def heartbeat_age(self, now: float) -> float | None:
        return None if self.last_seen is None else max(0.0, now - self.last_seen)

    def gpus_text(self) -> str:
        """`0:abcd1234 1:-`: each GPU index with the (short) id of the task on it."""
        if not self.gpu_indices:
            return "-"
        return " ".join(f"{i}:{(self.gpu_tasks.get(i) or '-')[:8]}" for i in self.gpu_indices)


@dataclass(slots=True)
class ReservationView:
    id: str
    user_id: str = ""
    status: str = "active"
    gpu_count: int = 0
    gpu_type: str | None = None
    node_count: int = 1
    expires_at: float | None = None
    gpus: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose key this is. `user_id` is None while unknown (a user key's own id is learnt from
    the tasks whose contents it may read)."""

    role: str = ADMIN
    user_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


# --- the queue index --------------------------------------------------------------------------


@dataclass(slots=True)
class Aging:
    """How the server ranks queued tasks: `priority_aged` (priority + rate x hours waited, at most
    `cap`; core/aging.py), then FIFO. Scores are taken at one reference time for every task (a
    task that came after it scores below its priority, by the same line), so the order holds as
    time passes without re-scoring: all queued tasks age at the same rate."""

    rate: float = DEFAULT_AGING_RATE
    cap: float = DEFAULT_AGING_CAP
    ref: float = 0.0

    def score(self, priority: int, created: float | None) -> float:
        if self.rate <= 0 or created is None:
            return float(priority)
        return min(self.cap, priority + self.rate * (self.ref - created) / 3600.0)


def infer_aging(queued: Iterable[dict[str, Any]], now: float) -> Aging:
    """The server's aging rate, read off queued tasks' `priority_aged` (the server does not
    publish its settings); the defaults when nothing tells."""
    rates: list[float] = []
    capped: list[float] = []
    for t in queued:
        created = parse_time(t.get("created_at"))
        aged = t.get("priority_aged")
        prio = t.get("priority")
        if created is None or not isinstance(aged, (int, float)) or not isinstance(prio, int):
            continue
        hours = (now - created) / 3600.0
        if hours < 1 / 60:  # too young to tell a rate from clock skew
            continue
        rate = (float(aged) - prio) / hours
        if rate < 0.01 and abs(aged - prio) < 1e-9:
            rates.append(0.0)
        elif float(aged) < DEFAULT_AGING_CAP - 1e-6:
            rates.append(rate)
        else:
            capped.append(float(aged))
    rate = statistics.median(rates) if rates else DEFAULT_AGING_RATE
    cap = max(capped) if capped else DEFAULT_AGING_CAP
    return Aging(rate=max(0.0, rate), cap=cap, ref=now)


class QueueIndex:
    """Queued task ids in scheduling order. Keys are (-score, created, id): add, remove and
    position are bisections, and a position reads in O(1), so a repaint reads only the rows on
    screen whatever the queue's length."""

    def __init__(self) -> None:
        self._keys: list[tuple[float, float, str]] = []
        self._key_of: dict[str, tuple[float, float, str]] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._key_of

    def __getitem__(self, i: int) -> str:
        return self._keys[i][2]

    def __iter__(self) -> Iterator[str]:
        return (k[2] for k in self._keys)

    def add(self, task_id: str, score: float, created: float | None) -> None:
        key = (-score, created if created is not None else float("inf"), task_id)
        old = self._key_of.get(task_id)
        if old == key:
            return
        if old is not None:
            self._drop(old)
        self._key_of[task_id] = key
        bisect.insort(self._keys, key)

    def remove(self, task_id: str) -> bool:
        key = self._key_of.pop(task_id, None)
        if key is None:
            return False
        self._drop(key)
        return True

    def _drop(self, key: tuple[float, float, str]) -> None:
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]

    def position(self, task_id: str) -> int | None:
        key = self._key_of.get(task_id)
        return None if key is None else bisect.bisect_left(self._keys, key)

    def load(self, entries: Iterable[tuple[str, float, float | None]]) -> None:
        """Replace the contents at once (a seed): one sort instead of n insertions."""
        self._key_of = {
            tid: (-score, created if created is not None else float("inf"), tid)
            for tid, score, created in entries
        }
        self._keys = sorted(self._key_of.values())

    def clear(self) -> None:
        self._keys.clear()
        self._key_of.clear()


# --- filters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskFilter:
    """`/` in the app: `user:alice status:running name:train`, and bare words, each of which must
    appear in the task's id, job name or user (case-insensitive)."""

    text: str = ""
    user: str | None = None
    status: str | None = None
    name: str | None = None
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> TaskFilter:
        user = status = name = None
        words: list[str] = []
        for tok in text.split():
            key, sep, value = tok.partition(":")
            key = key.lower()
            if sep and key in ("user", "u") and value:
                user = value
            elif sep and key in ("status", "s") and value:
                status = value.lower()
            elif sep and key in ("name", "n", "job") and value:
                name = value.lower()
            else:
                words.append(tok.lower())
        return cls(text.strip(), user, status, name, tuple(words))

    def __bool__(self) -> bool:
        return bool(self.user or self.status or self.name or self.words)

    def matches(self, t: TaskView) -> bool:
        if self.user is not None and t.user_id != self.user:
            return False
        if self.status is not None and t.status != self.status:
            return False
        if self.name is not None and self.name not in t.job_name.lower():
            return False
        for w in self.words:
            if w not in t.id and w not in t.job_name.lower() and w not in t.user_id.lower():
                return False
        return True


NO_FILTER = TaskFilter()


# --- the state --------------------------------------------------------------------------------


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


class ViewState:
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

    # --- what the panes read ------------------------------------------------------------------

    def _cached(self, name: str, key: Any, make: Callable[[], _V]) -> _V:
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return cast(_V, hit[1])
        value = make()
        self._cache[name] = (key, value)
        return value

    def queue_ids(self, flt: TaskFilter = NO_FILTER, sort: str = "schedule") -> QueueIndex | list[str]:
        """Queued ids in the order shown. Unfiltered in scheduling order: the index itself (no
        copy); otherwise a list made once per change of the queue."""
        if not flt and sort == "schedule":
            return self.queue

        def make() -> list[str]:
            tasks = self.tasks
            ids = [tid for tid in self.queue if flt.matches(tasks[tid])] if flt else list(self.queue)
            if sort == "newest":
                ids.sort(key=lambda i: -(tasks[i].created_at or 0.0))
            elif sort == "user":
                ids.sort(key=lambda i: tasks[i].user_id)  # stable: scheduling order within a user
            elif sort == "gpus":
                ids.sort(key=lambda i: -(tasks[i].gpu * tasks[i].node_count))
            return ids

        return self._cached(QUEUE, (self.versions[QUEUE], flt, sort), make)

    def running_ids(self, flt: TaskFilter = NO_FILTER, sort: str = "started") -> list[str]:
        def make() -> list[str]:
            tasks = self.tasks
            ids = [tid for tid in self.running if not flt or flt.matches(tasks[tid])]
            if sort == "worker":
                ids.sort(key=lambda i: tasks[i].worker_id or "")
            elif sort == "user":
                ids.sort(key=lambda i: tasks[i].user_id)
            elif sort == "name":
                ids.sort(key=lambda i: tasks[i].job_name)
            return ids

        return self._cached(RUNNING, (self.versions[RUNNING], flt, sort), make)

    def ended_ids(self, flt: TaskFilter = NO_FILTER) -> list[str]:
        def make() -> list[str]:
            return [tid for tid in reversed(self.ended) if not flt or flt.matches(self.tasks[tid])]

        return self._cached(ENDED, (self.versions[ENDED], flt), make)

    def worker_ids(self, sort: str = "name") -> list[str]:
        def make() -> list[str]:
            ws = self.workers
            ids = sorted(ws, key=lambda i: ws[i].name)
            if sort == "status":
                order = {"active": 0, "draining": 1, "offline": 2}
                ids.sort(key=lambda i: order.get(ws[i].status, 3))
            elif sort == "load":
                ids.sort(key=lambda i: -ws[i].slots_used)
            return ids

        return self._cached(WORKERS, (self.versions[WORKERS], sort), make)

    def reservation_ids(self) -> list[str]:
        def make() -> list[str]:
            rs = self.reservations
            return sorted(rs, key=lambda i: (rs[i].status != "active", rs[i].expires_at or 0.0))

        return self._cached(RESERVATIONS, self.versions[RESERVATIONS], make)

    def aged(self, t: TaskView, now: float) -> float:
        """A queued task's `priority_aged` now, as the server computes it (core/aging.py)."""
        a = self.aging
        if t.status != QUEUED or a.rate <= 0 or t.created_at is None:
            return float(t.priority)
        return max(float(t.priority), min(a.cap, t.priority + a.rate * (now - t.created_at) / 3600.0))

    def summary(self) -> str:
        depth = self.depth if self.depth is not None else len(self.queue)
        active = sum(1 for w in self.workers.values() if w.status == "active")
        parts = [f"{depth} queued", f"{len(self.running)} running"]
        if self.sees_scheduler:
            parts.append(f"{active}/{len(self.workers)} workers active")
            parts.append(f"{sum(1 for r in self.reservations.values() if r.status == 'active')} reservations")
        return ", ".join(parts)


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
