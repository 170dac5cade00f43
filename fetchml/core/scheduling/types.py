"""The scheduling decision's vocabulary: what goes in, what comes out, and the pending reasons.

Inputs: `TaskReq` (a queued task; its `shape` is `shape_key` of everything placement depends
on), `WorkerFree` (a worker's free capacity, with the `Release`s of its running tasks),
`ReservationHold`, and the `Promise` of the previous decision. Output: `Decision` (the
`Placement`s, the anti-starvation `Shadow`, a pending reason per task, and the `Promise` to pass
on). The ``REASON_*`` prefixes are the stable part of the pending reasons (the text is built in
`fetchml.core.scheduling.explain`); the ``KIND_*`` values classify them inside the package.

Pure: data only, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple

__all__ = [
    "KIND_NEVER",
    "KIND_NO_WORKERS",
    "KIND_PRIORITY",
    "KIND_RESERVATION",
    "KIND_RESOURCE",
    "KIND_SHADOW",
    "REASON_NEVER",
    "REASON_NO_WORKERS",
    "REASON_PRIORITY",
    "REASON_PROMISED",
    "REASON_RESERVATION",
    "REASON_SHADOW",
    "Decision",
    "NodePlacement",
    "Placement",
    "Promise",
    "Reasons",
    "Release",
    "ReservationHold",
    "Shadow",
    "ShadowNode",
    "TaskReq",
    "WorkerFree",
    "parse_shape",
    "shape_key",
]

# Pending reasons. The prefixes are stable (UIs may group on them); the details after ':' or
# ';' are for people.
REASON_NO_WORKERS = "no active workers"
REASON_NEVER = "no worker can ever fit this"  # + ": <what is missing>"
REASON_PRIORITY = "priority: waiting behind higher-priority tasks"
REASON_SHADOW = "priority: capacity held for higher-priority task"  # + " <task id>"
REASON_PROMISED = "priority: capacity held for earlier-promised task"  # + " <task id>" (a kept promise)
REASON_RESERVATION = "capacity held by reservation"  # + " r-1[, r-2...]"
# Otherwise (resources): "needs 2 GPUs of type H100; largest free: 1 on w-3",
# "needs a free batch slot; ...", "needs 8 CPUs; largest free: 4 on w-1",
# "needs 64 GB memory; largest free: 32 GB on w-2", "waiting for 3 nodes; 2 fit now".

# Reason kinds (internal).
KIND_NEVER, KIND_NO_WORKERS, KIND_RESERVATION, KIND_PRIORITY, KIND_SHADOW, KIND_RESOURCE = range(6)


def shape_key(
    cpu: int,
    memory_gb: int,
    gpu: int,
    gpu_type: str | None,
    node_count: int,
    reservation_id: str | None,
    user_id: str,
    is_admin: bool,
) -> str:
    """A string naming everything about a task that placement depends on.

    Two tasks with the same key fit exactly the same places. A string (not a tuple) because its
    hash is cached, which makes the per-decision set/dict work over 100k tasks several times
    cheaper. The free-text parts are length-prefixed, so any text round-trips.
    """
    gt = gpu_type if gpu and gpu_type else ""
    if reservation_id:
        rid, uid, adm = reservation_id, user_id, "1" if is_admin else "0"
    else:
        rid, uid, adm = "", "", "0"
    return f"{cpu},{memory_gb},{gpu},{node_count},{adm},{len(gt)},{len(rid)},{gt}{rid}{uid}"


def parse_shape(key: str) -> tuple[int, int, int, int, bool, str, str, str]:
    """The inverse of `shape_key`: (cpu, memory, gpus, nodes, admin, gpu type, reservation, user)."""
    cpu, mem, gpu, nodes, adm, lt_, lr_, rest = key.split(",", 7)
    a, b = int(lt_), int(lr_)
    return int(cpu), int(mem), int(gpu), int(nodes), adm == "1", rest[:a], rest[a : a + b], rest[a + b :]


@dataclass(frozen=True, slots=True)
class TaskReq:
    """One queued task, as the scheduler sees it.

    ``created_at`` is POSIX seconds (``datetime.timestamp()``); ``seq`` is the submission order
    (unique, increasing). ``gpu_type`` only matters when ``gpu > 0`` and matches the worker's
    type case-insensitively. ``user_id``/``is_admin`` only matter with a ``reservation_id``.
    ``time_limit_s`` (seconds, None = no limit) is not part of the shape: it only decides
    whether the task may backfill capacity held for a blocked task (it must end by then).
    """

    id: str
    seq: int
    priority: int
    created_at: float
    cpu: int = 0
    memory_gb: int = 0
    gpu: int = 0
    gpu_type: str | None = None
    node_count: int = 1
    reservation_id: str | None = None
    user_id: str = ""
    is_admin: bool = False
    time_limit_s: float | None = None
    shape: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.node_count < 1 or self.gpu < 0 or self.cpu < 0 or self.memory_gb < 0:
            raise ValueError(f"task {self.id}: resources must be >= 0 and node_count >= 1")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"task {self.id}: time_limit_s must be > 0 (or None)")
        object.__setattr__(
            self,
            "shape",
            shape_key(
                self.cpu,
                self.memory_gb,
                self.gpu,
                self.gpu_type,
                self.node_count,
                self.reservation_id,
                self.user_id,
                self.is_admin,
            ),
        )


@dataclass(frozen=True, slots=True)
class Release:
    """What one running task (one node of it) frees on its worker when it ends.

    ``at``: POSIX seconds, the node's start + the task's time limit; None when the task has no
    limit (its capacity never frees, for planning). A release already due (``at`` <= now: the
    task is being stopped, or overran) counts as now. ``gpus`` are indices on that worker.
    """

    at: float | None
    gpus: tuple[int, ...] = ()
    cpu: int = 0
    memory_gb: int = 0
    slots: int = 1


@dataclass(frozen=True, slots=True)
class WorkerFree:
    """A worker's FREE capacity now (capacity minus what its running tasks hold).

    ``free_gpus`` are the GPU indices no running task holds (reserved ones included: the
    scheduler withholds those itself). ``total_*``/``batch_total`` are the worker's whole
    capacity, used only to tell "can never fit" from "not now"; when None the free figure
    stands in (then a busy worker looks small: pass the totals). Inactive workers (draining,
    offline) get nothing placed but count for "can ever fit". ``releases``: what each running
    task (node) frees here when it ends, at its start + time limit (``Release.at`` None: no
    limit); only used to plan a shadow's start and backfill (empty: nothing is known).
    """

    id: str
    free_cpu: int
    free_memory_gb: int
    free_gpus: tuple[int, ...] = ()
    gpu_type: str | None = None
    batch_available: int = 1
    active: bool = True
    total_cpu: int | None = None
    total_memory_gb: int | None = None
    total_gpus: int | None = None
    batch_total: int | None = None
    releases: tuple[Release, ...] = ()


@dataclass(frozen=True, slots=True)
class ReservationHold:
    """An active (unexpired) reservation: the GPU indices it holds, per worker id.

    Held GPUs that are free go only to tasks with ``reservation_id == id`` whose ``user_id`` is
    ``user_id`` or that are admin-owned. Expired reservations must simply not be passed in.
    ``gpu_type`` is informational (the caller picked the GPUs).
    """

    id: str
    user_id: str
    gpus: Mapping[str, tuple[int, ...]]
    gpu_type: str | None = None


class NodePlacement(NamedTuple):
    rank: int
    worker_id: str
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Placement:
    task_id: str
    nodes: tuple[NodePlacement, ...]  # rank 0 first; one per node, on distinct workers
    priority_aged: float
    reservation_id: str | None = None  # set when the task was allowed to use its reservation
    # True when it uses capacity held for the shadow owner (it ends by Shadow.start)
    backfill: bool = False


@dataclass(frozen=True, slots=True)
class ShadowNode:
    worker_id: str
    gpus: tuple[int, ...]
    cpu: int
    memory_gb: int
    slots: int


@dataclass(frozen=True, slots=True)
class Shadow:
    """Capacity withheld (for this decision only) from every task ordered after ``task_id``.

    ``start``: when the owner is expected to fit (POSIX seconds), from the workers' releases;
    None when some capacity it needs has no known end. Only tasks that end by then may use the
    held capacity (backfill).
    """

    task_id: str
    nodes: tuple[ShadowNode, ...]
    start: float | None = None


@dataclass(frozen=True, slots=True)
class Promise:
    """The shadow owner of a decision and the start it was promised (POSIX seconds)."""

    task_id: str
    start: float


_ID = attrgetter("id")
_SHAPE = attrgetter("shape")


class Reasons(dict[str, str]):
    """Reason per shape; a shape not settled during the walk is settled on first lookup."""

    __slots__ = ("_compute",)

    def __init__(self, compute: Callable[[str], str], settled: dict[str, str]) -> None:
        super().__init__(settled)
        self._compute = compute

    def __missing__(self, key: str) -> str:
        reason = self[key] = self._compute(key)
        return reason


class Decision:
    """The outcome of one decision.

    ``pending`` (every queued task not placed -> why) is built on first access, from one
    reason per shape: building a 100k-entry dict costs more than the decision itself, and a
    caller that walks its own tasks anyway can ask ``reason_for(task)`` instead, O(1) each.
    It reads the queue passed to ``decide``: do not change that sequence before reading it.
    """

    __slots__ = (
        "_ids",
        "_owner",
        "_pending",
        "_placed",
        "assignments",
        "by_shape",
        "promise",
        "scanned",
        "shadow",
    )

    def __init__(
        self,
        assignments: list[Placement],
        by_shape: dict[str, str],
        *,
        shadow: Shadow | None = None,
        scanned: int = 0,
        queue: Sequence[TaskReq] = (),
        owner_reason: str | None = None,
        promise: Promise | None = None,
    ) -> None:
        self.assignments = assignments  # in decision (priority) order
        # the shadow owner's promised start, to pass into the next decision
        # (fetchml.core.scheduling.shadow)
        self.promise = promise
        # TaskReq.shape -> reason; a shape not settled during the walk is settled on first lookup
        self.by_shape = by_shape
        self.shadow = shadow
        self.scanned = scanned  # tasks walked one by one (the rest were settled per shape)
        self._placed = {p.task_id for p in assignments}
        self._owner = (shadow.task_id, owner_reason) if shadow is not None and owner_reason else None
        self._ids = queue
        self._pending: dict[str, str] | None = None

    def reason_for(self, task: TaskReq) -> str | None:
        """The pending reason of a task of this decision's queue; None when it was placed."""
        if task.id in self._placed:
            return None
        if self._owner is not None and task.id == self._owner[0]:
            return self._owner[1]
        return self.by_shape[task.shape]

    @property
    def pending(self) -> dict[str, str]:
        if self._pending is None:
            # (a shape whose tasks were all placed gets a reason computed here for nothing;
            # that is once per shape, cheaper than filtering 100k tasks first)
            pending = dict(
                zip(map(_ID, self._ids), map(self.by_shape.__getitem__, map(_SHAPE, self._ids)), strict=True)
            )
            for tid in self._placed:
                del pending[tid]
            if self._owner is not None:
                pending[self._owner[0]] = self._owner[1]
            self._pending = pending
        return self._pending
