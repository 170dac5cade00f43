"""The view models the panes read (a task, a worker, a reservation, whose key this is), the
names the state uses for its panes, and the readers of the API's JSON values they are built from.

Plain data: the reducer (fetchml/tui/state.py) fills them, the panes (fetchml/tui/panes.py) read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
