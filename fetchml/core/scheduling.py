"""The scheduling decision: queued tasks + free capacity -> placements and pending reasons.

Pure and deterministic: no I/O, no clock (``now`` is passed in), no randomness. The policy is
written down in docs/scheduling.md; in short:

- Order: aged priority descending (``fetchml.core.aging.aged_priority``), then ``seq`` (FIFO).
- Each task in that order is placed if it fits the capacity left by the tasks before it; a
  lower task may backfill capacity a higher, blocked task cannot use (no strict head-of-line
  blocking), except:
- Anti-starvation: the highest-ordered *gang* (node_count > 1) that does not fit gets a shadow
  hold on the best candidate workers; tasks after it cannot use that held capacity, unless
  (backfill) they carry a time limit that ends by the gang's *shadow start*, the time its
  capacity is expected to be free (from the running tasks' time limits, ``WorkerFree.releases``;
  ``fetchml.core.backfill``).
- A promise is kept: the owner of the previous decision's shadow (``promise``) gets its hold
  before the walk, against every task ahead of it too, while it stays queued and blocked
  (``fetchml.core.promise``).
- Reservations withhold their GPUs from every task but their owner's tasks carrying their id.
- A gang is placed whole, on distinct workers, or not at all.

Performance notes (the budget is 100 ms for 100,000 queued tasks on a small machine; see
docs/scheduling.md for figures): every step over the whole queue runs as C-level ``map``,
``bytes.index`` or ``sorted`` calls; only the head of the queue (until nothing more can fit
anywhere) is walked in Python. That rests on two facts:

- Aging keeps the relative order of tasks of equal priority (it is monotone in the wait), so
  each priority's tasks are already in submission order and a heap merges the priorities
  lazily: no sort of the queue.
- Capacity only shrinks during a decision, so once a resource *shape* (cpu, memory, gpus, type,
  nodes, reservation) fails to fit, every later task of that shape fails too: the answer and
  its pending reason are memoised per shape, and the walk stops when every shape has failed.
  (So the cost also grows with the number of distinct shapes: ~2,000 of them in 100k tasks
  still decide in well under 100 ms; 16,000 take about half a second.)
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_right, insort
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, islice, repeat
from operator import attrgetter, ge, indexOf, itemgetter, le, lt, neg
from typing import NamedTuple

from fetchml.core.aging import DEFAULT_AGING_CAP, DEFAULT_AGING_RATE, aged_priority, check_aging, hours_waited
from fetchml.core.backfill import Release, fmt_duration, ready_at
from fetchml.core.promise import Promise, carry

__all__ = [
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
    "Release",
    "ReservationHold",
    "Shadow",
    "ShadowNode",
    "TaskReq",
    "WorkerFree",
    "decide",
    "order_key",
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
_NEVER, _NO_WORKERS, _RESERVATION, _PRIORITY, _SHADOW, _RESOURCE = range(6)
_SHADOWABLE = (_PRIORITY, _RESOURCE, _RESERVATION)
_PROBE_AFTER = 256  # consecutive memoised failures before checking whether anything can still fit


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


class _Reasons(dict[str, str]):
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
        # the shadow owner's promised start, to pass into the next decision (fetchml.core.promise)
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


def order_key(task: TaskReq, *, now: float, aging_rate: float, aging_cap: float) -> tuple[float, int]:
    """The sort key of the decision order: (-aged priority, seq). Smaller runs first."""
    aged = aged_priority(task.priority, hours_waited(task.created_at, now), aging_rate, aging_cap)
    return (-aged, task.seq)


# -- internals -------------------------------------------------------------------------------

_ID = attrgetter("id")
_SEQ = attrgetter("seq")
_PRIO = attrgetter("priority")
_CREATED = attrgetter("created_at")
_SHAPE = attrgetter("shape")
_LIMIT = attrgetter("time_limit_s")
_NO_LIMIT = {None: float("inf")}  # .get(limit, limit): a task without a limit never ends
_FIRST_TWO = itemgetter(0, 1)
_GE: Callable[[float, float], bool] = ge


@dataclass(slots=True)
class _Shape:
    key: str
    cpu: int
    mem: int
    gpu: int
    gtype: str | None  # lower-cased, None when gpu == 0 or untyped
    gtype_text: str  # as the task spelled it, for messages
    nodes: int
    res: str | None  # the reservation this shape may use (exists, and owner or admin)
    never: tuple[int, str] | None = None


@dataclass(slots=True)
class _Held:
    """What is still held for the shadow owner on one worker (backfill takes from it)."""

    cpu: int
    mem: int
    slots: int
    gpus: list[int]  # unreserved
    res: str | None  # the owner's reservation, if it may use one
    res_gpus: list[int]  # GPUs of that reservation


_NOTHING_HELD = _Held(0, 0, 0, [], None, [])


def _parse_shape(key: str) -> tuple[int, int, int, int, bool, str, str, str]:
    cpu, mem, gpu, nodes, adm, lt_, lr_, rest = key.split(",", 7)
    a, b = int(lt_), int(lr_)
    return int(cpu), int(mem), int(gpu), int(nodes), adm == "1", rest[:a], rest[a : a + b], rest[a + b :]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _gpu_text(sh: _Shape) -> str:
    gpus = _plural(sh.gpu, "GPU")
    return f"{gpus} of type {sh.gtype_text}" if sh.gtype else gpus


def _ordered(queue: Sequence[TaskReq], now: float, rate: float, cap: float) -> Iterator[tuple[float, int]]:
    """Yields (aged priority, queue index) in decision order, lazily: cost is paid per task taken.

    Works on columns extracted in queue order (touching 100k objects out of memory order costs
    several times more than in order). Fast paths, both with no sort at all:

    - queue in seq order (``ORDER BY seq``) with created_at non-decreasing: each priority's
      tasks are found with ``bytes.index`` (memchr) as the merge needs them;
    - queue grouped by priority (desc) with seq ascending and created_at non-decreasing inside
      each group (``ORDER BY priority DESC, seq``): each group is a contiguous range.

    Either way each priority's tasks are in (-aged, seq) order, because aging is monotone in
    the wait; a heap merges the group heads. Anything else is sorted exactly (slower).

    While the walk runs only untracked containers stay alive (priorities as ``bytes``; seq and
    created_at are read from the few tasks walked): a 100k-element list still in the young
    generation makes the collection that the walk's allocations trigger cost ~3 ms per list.
    """
    n = len(queue)
    if not n:
        return
    aging = rate > 0.0
    prios: bytes | list[int]
    try:
        prios = bytes(map(_PRIO, queue))  # priorities are 1..10
    except (ValueError, TypeError):
        prios = list(map(_PRIO, queue))
    seq_list = list(map(_SEQ, queue))
    created_list = list(map(_CREATED, queue)) if aging else []
    heads: list[tuple[float, int, int, int]] = []  # (-aged, seq, group, first index)
    ends: list[int] = []  # per group: -1 = "find the next index of that priority", else range end
    if all(map(lt, seq_list, islice(seq_list, 1, None))):
        if not aging or all(map(le, created_list, islice(created_list, 1, None))):
            for p in sorted(set(prios)):
                heads.append((0.0, 0, len(ends), prios.index(p)))
                ends.append(-1)
    elif all(map(ge, prios, islice(prios, 1, None))):
        start = 0
        while start < n:
            end = bisect_right(prios, -prios[start], start, n, key=neg)
            sq, cr = seq_list[start:end], created_list[start:end]
            if not all(map(lt, sq, islice(sq, 1, None))) or (
                aging and not all(map(le, cr, islice(cr, 1, None)))
            ):
                heads, ends = [], []
                break
            heads.append((0.0, 0, len(ends), start))
            ends.append(end)
            start = end

    def aged(i: int) -> float:
        return aged_priority(prios[i], hours_waited(queue[i].created_at, now) if aging else 0.0, rate, cap)

    if not ends:
        # Exact sort: by seq, then (stable) by aged priority descending.
        order = array("q", sorted(range(n), key=seq_list.__getitem__))
        del seq_list, created_list
        neg_aged = array("d", [-aged(i) for i in range(n)])
        order = array("q", sorted(order, key=neg_aged.__getitem__))
        for i in order:
            yield -neg_aged[i], i
        return
    # Only untracked containers stay alive from here on: see the docstring.
    del seq_list, created_list
    heads = [(-aged(i), queue[i].seq, gi, i) for _, _, gi, i in heads]
    heapq.heapify(heads)
    index = prios.index
    while heads:
        neg_aged_i, _, gi, i = heads[0]
        yield -neg_aged_i, i
        end = ends[gi]
        if end < 0:
            try:
                i = index(prios[i], i + 1)
            except ValueError:
                i = -1
        else:
            i = i + 1 if i + 1 < end else -1
        if i < 0:
            heapq.heappop(heads)
        else:
            heapq.heapreplace(heads, (-aged(i), queue[i].seq, gi, i))


class _Cluster:
    """Mutable free capacity of the active workers during one decision."""

    def __init__(
        self,
        workers: Sequence[WorkerFree],
        reservations: Sequence[ReservationHold],
        prefer: str | None = None,
    ) -> None:
        self.reservations = {r.id: r for r in reservations}
        # gpu index -> reservation id, per worker id (first reservation listing a GPU wins)
        held: dict[str, dict[int, str]] = {}
        for r in reservations:
            for wid, idxs in r.gpus.items():
                per = held.setdefault(wid, {})
                for g in idxs:
                    per.setdefault(g, r.id)
        self.held = held
        # (lower-cased type, gpus, batch slots, cpu, memory) of each worker when empty
        self.totals: dict[str, tuple[str | None, int, int, int, int]] = {
            w.id: (
                w.gpu_type.lower() if w.gpu_type else None,
                w.total_gpus if w.total_gpus is not None else len(w.free_gpus),
                w.batch_total if w.batch_total is not None else w.batch_available,
                w.total_cpu if w.total_cpu is not None else w.free_cpu,
                w.total_memory_gb if w.total_memory_gb is not None else w.free_memory_gb,
            )
            for w in workers
        }
        active = [w for w in workers if w.active]
        self.releases = [w.releases for w in active]
        self.ids = [w.id for w in active]
        self.gtype = [w.gpu_type.lower() if w.gpu_type else None for w in active]
        self.cpu = [w.free_cpu for w in active]
        self.mem = [w.free_memory_gb for w in active]
        self.slots = [max(0, w.batch_available) for w in active]
        self.free: list[list[int]] = []  # unreserved free GPUs, ascending
        self.rfree: list[dict[str, list[int]]] = []  # reserved free GPUs by reservation
        for w in active:
            per = held.get(w.id, {})
            free: list[int] = []
            rfree: dict[str, list[int]] = {}
            for g in sorted(set(w.free_gpus)):
                rid = per.get(g)
                if rid is None:
                    free.append(g)
                else:
                    rfree.setdefault(rid, []).append(g)
            self.free.append(free)
            self.rfree.append(rfree)
        self.n = len(active)
        # The worker asking for work, if any: a task that fits it goes there before best fit.
        self.prefer = self.ids.index(prefer) if prefer is not None and prefer in self.ids else None
        self.total_slots = sum(self.slots)
        self.maxg = max((len(f) for f in self.free), default=0)
        # best-fit index: workers with a free slot, by number of free unreserved GPUs
        self.buckets: list[list[int]] = [[] for _ in range(self.maxg + 1)]
        for i in range(self.n):
            if self.slots[i] > 0:
                self.buckets[len(self.free[i])].append(i)
        self.res_workers: dict[str, list[int]] = {
            rid: [i for i in range(self.n) if self.rfree[i].get(rid)] for rid in self.reservations
        }
        self.version = 0  # bumped by every take(): snapshots are cached per version
        self._snaps: dict[bool, tuple[int, list[tuple[int, int, int, int, dict[str, int]]]]] = {}
        self.initial = self.snapshot()
        self.shadow: Shadow | None = None
        # What is still held for the shadow owner, per worker index, in shadow order.
        self.hold: dict[int, _Held] = {}
        # Releases of the tasks placed in this decision so far (worker index -> Release), for
        # planning the shadow's start; only tasks with a time limit ever release.
        self.placed_rel: dict[int, list[Release]] = {}
        self.now = 0.0  # set by hold_for
        self.until: float | None = None  # tasks ending by then may use the hold (backfill)
        self.promised = False  # the shadow is a promise kept from an earlier decision

    # -- shapes -------------------------------------------------------------------------------

    def make_shape(self, key: str) -> _Shape:
        cpu, mem, gpu, nodes, adm, gt, rid, uid = _parse_shape(key)
        res: str | None = None
        if rid:
            r = self.reservations.get(rid)
            if r is not None and (adm or uid == r.user_id):
                res = rid
        sh = _Shape(key, cpu, mem, gpu, gt.lower() if gt else None, gt, nodes, res)
        sh.never = self.never(sh)
        return sh

    def never(self, sh: _Shape) -> tuple[int, str] | None:
        """A never-fit reason when no worker passed in (active or not), even empty, can host it."""
        hosts = 0
        cands = list(self.totals.values())
        for wt, tg, ts, tc, tm in cands:
            if (
                (sh.gpu == 0 or ((sh.gtype is None or wt == sh.gtype) and tg >= sh.gpu))
                and ts >= 1
                and tc >= sh.cpu
                and tm >= sh.mem
            ):
                hosts += 1
        if hosts >= sh.nodes:
            return None
        if hosts:
            return _NEVER, (
                f"{REASON_NEVER}: needs {sh.nodes} nodes on distinct workers; "
                f"only {_plural(hosts, 'worker')} could ever host one"
            )
        if not cands:
            return _NEVER, f"{REASON_NEVER}: no workers"
        if sh.gpu:
            if sh.gtype is not None:
                cands = [c for c in cands if c[0] == sh.gtype]
                if not cands:
                    return _NEVER, f"{REASON_NEVER}: needs {_gpu_text(sh)}; no worker has that type"
            most = max(c[1] for c in cands)
            if most < sh.gpu:
                return _NEVER, f"{REASON_NEVER}: needs {_gpu_text(sh)} on one worker; the largest has {most}"
            cands = [c for c in cands if c[1] >= sh.gpu]
        cands = [c for c in cands if c[2] >= 1]
        if not cands:
            return _NEVER, f"{REASON_NEVER}: no worker that could host it has a batch slot"
        most = max(c[3] for c in cands)
        if most < sh.cpu:
            return _NEVER, f"{REASON_NEVER}: needs {_plural(sh.cpu, 'CPU')}; the largest worker has {most}"
        cands = [c for c in cands if c[3] >= sh.cpu]
        most = max(c[4] for c in cands)
        return _NEVER, f"{REASON_NEVER}: needs {sh.mem} GB memory; the largest worker has {most} GB"

    # -- live placement -----------------------------------------------------------------------

    def search(self, sh: _Shape) -> list[int]:
        """Workers for the shape's nodes (best fit first); fewer than sh.nodes when it does not fit."""
        c, m, g, t, res, want = sh.cpu, sh.mem, sh.gpu, sh.gtype, sh.res, sh.nodes
        cpu, mem, gtype = self.cpu, self.mem, self.gtype
        chosen: list[int] = []
        p = self.prefer
        if (
            p is not None
            and self.slots[p] > 0
            and cpu[p] >= c
            and mem[p] >= m
            and (t is None or gtype[p] == t)
            and len(self.free[p]) + (len(self.rfree[p].get(res, ())) if res is not None else 0) >= g
        ):
            chosen.append(p)
            if want == 1:
                return chosen
        if res is not None:
            slots, free, rfree = self.slots, self.free, self.rfree
            for i in self.res_workers[res]:
                if (
                    i not in chosen
                    and slots[i] > 0
                    and cpu[i] >= c
                    and mem[i] >= m
                    and (t is None or gtype[i] == t)
                    and len(free[i]) + len(rfree[i].get(res, ())) >= g
                ):
                    chosen.append(i)
                    if len(chosen) == want:
                        return chosen
        buckets = self.buckets
        for k in range(g, self.maxg + 1):
            for i in buckets[k]:
                if cpu[i] >= c and mem[i] >= m and (t is None or gtype[i] == t) and i not in chosen:
                    chosen.append(i)
                    if len(chosen) == want:
                        return chosen
        return chosen

    def take(self, i: int, cpu: int, mem: int, slots: int, gpus: int, res: str | None) -> tuple[int, ...]:
        """Removes capacity from worker i; returns the GPU indices taken (reserved ones first)."""
        self.version += 1
        free = self.free[i]
        old_k, old_s = len(free), self.slots[i]
        self.cpu[i] -= cpu
        self.mem[i] -= mem
        self.slots[i] -= slots
        self.total_slots -= slots
        got: list[int] = []
        if gpus:
            if res is not None:
                pool = self.rfree[i].get(res)
                if pool:
                    got = pool[:gpus]
                    del pool[:gpus]
            rest = gpus - len(got)
            if rest:
                got += free[:rest]
                del free[:rest]
        new_k = len(free)
        if old_s > 0 and (new_k != old_k or self.slots[i] <= 0):
            self.buckets[old_k].remove(i)
            if self.slots[i] > 0:
                insort(self.buckets[new_k], i)
        return tuple(sorted(got))

    def note_release(self, i: int, at: float, sh: _Shape, gpus: tuple[int, ...]) -> None:
        """A task placed in this decision frees this node at `at` (its time limit)."""
        self.placed_rel.setdefault(i, []).append(Release(at, gpus, sh.cpu, sh.mem, 1))

    # -- backfill: capacity held for the shadow, for tasks that end before it starts ---------

    def fits_with_hold(self, i: int, sh: _Shape) -> bool:
        """One node of the shape fits worker i's free capacity plus what is held there."""
        h = self.hold.get(i, _NOTHING_HELD)
        if self.slots[i] + h.slots < 1 or self.cpu[i] + h.cpu < sh.cpu or self.mem[i] + h.mem < sh.mem:
            return False
        if not sh.gpu:
            return True
        if sh.gtype is not None and self.gtype[i] != sh.gtype:
            return False
        usable = len(self.free[i]) + len(h.gpus)
        if sh.res is not None:
            usable += len(self.rfree[i].get(sh.res, ())) + (len(h.res_gpus) if h.res == sh.res else 0)
        return usable >= sh.gpu

    def search_backfill(self, sh: _Shape) -> list[int]:
        """Workers for a task that may backfill: those its nodes fit without held capacity
        (best fit), then the asking worker and the held ones with it."""
        chosen = self.search(sh)
        if len(chosen) == sh.nodes:
            return chosen
        p = self.prefer
        for i in (*(() if p is None else (p,)), *self.hold):
            if i not in chosen and self.fits_with_hold(i, sh):
                chosen.append(i)
                if len(chosen) == sh.nodes:
                    break
        return chosen

    def take_backfill(self, i: int, sh: _Shape) -> tuple[tuple[int, ...], bool]:
        """Takes one node from worker i: free capacity first, then held (each held unit used
        may delay the owner's actual start if running tasks end before their limits).
        Returns (GPUs, whether it used held capacity)."""
        h = self.hold.get(i)
        if h is None:
            return self.take(i, sh.cpu, sh.mem, 1, sh.gpu, sh.res), False
        res = sh.res
        own = len(self.rfree[i].get(res, ())) if res is not None else 0
        c, m = min(self.cpu[i], sh.cpu), min(self.mem[i], sh.mem)
        s = min(max(self.slots[i], 0), 1)
        g = min(sh.gpu, own + len(self.free[i]))
        hc, hm, hs, hg = sh.cpu - c, sh.mem - m, 1 - s, sh.gpu - g
        got: list[int] = []
        if hg and res is not None and h.res == res:
            got = h.res_gpus[:hg]
            del h.res_gpus[:hg]
        k = hg - len(got)
        got += h.gpus[:k]
        del h.gpus[:k]
        h.cpu, h.mem, h.slots = h.cpu - hc, h.mem - hm, h.slots - hs
        got += self.take(i, c, m, s, g, res)  # bumps the version (snapshots see the new hold)
        return tuple(sorted(got)), bool(hc or hm or hs or hg)

    # -- views for pending reasons ------------------------------------------------------------

    def snapshot(self, with_shadow: bool = False) -> list[tuple[int, int, int, int, dict[str, int]]]:
        """Free capacity per active worker: (cpu, memory, slots, unreserved GPUs, {reservation: GPUs})."""
        cached = self._snaps.get(with_shadow)
        if cached is not None and cached[0] == self.version:
            return cached[1]
        snap = [
            (
                self.cpu[i],
                self.mem[i],
                self.slots[i],
                len(self.free[i]),
                {r: len(v) for r, v in self.rfree[i].items()},
            )
            for i in range(self.n)
        ]
        if with_shadow:
            for i, h in self.hold.items():
                cpu, mem, slots, free, rf = snap[i]
                if h.res is not None and h.res_gpus:
                    rf[h.res] = rf.get(h.res, 0) + len(h.res_gpus)
                snap[i] = (cpu + h.cpu, mem + h.mem, slots + h.slots, free + len(h.gpus), rf)
        self._snaps[with_shadow] = (self.version, snap)
        return snap

    def hosts(
        self,
        sh: _Shape,
        snap: list[tuple[int, int, int, int, dict[str, int]]],
        release: bool = False,
        enough: int | None = None,
    ) -> list[int]:
        """Workers of a snapshot on which one node of the shape fits (release: ignore reservations).

        Stops once `enough` are found."""
        out = []
        c, m, g, t, res = sh.cpu, sh.mem, sh.gpu, sh.gtype, sh.res
        gtype = self.gtype
        for i, (cpu, mem, slots, free, rf) in enumerate(snap):
            if slots < 1 or cpu < c or mem < m:
                continue
            if g:
                if t is not None and gtype[i] != t:
                    continue
                usable = free + (sum(rf.values()) if release else rf.get(res, 0) if res else 0)
                if usable < g:
                    continue
            out.append(i)
            if len(out) == enough:
                break
        return out

    def fits(self, sh: _Shape, snap: list[tuple[int, int, int, int, dict[str, int]]]) -> bool:
        return len(self.hosts(sh, snap, enough=sh.nodes)) >= sh.nodes

    def reason(self, sh: _Shape) -> tuple[int, str]:
        """Why the shape does not fit now (called once per shape, at its first failure)."""
        if sh.never is not None:
            return sh.never
        if self.shadow is not None and self.fits(sh, self.snapshot(with_shadow=True)):
            text = REASON_PROMISED if self.promised else REASON_SHADOW
            return _SHADOW, f"{text} {self.shadow.task_id}{self.shadow_wait_text()}"
        if self.fits(sh, self.initial):
            return _PRIORITY, REASON_PRIORITY
        released = self.hosts(sh, self.initial, release=True)
        if len(released) >= sh.nodes:
            names = sorted({r for i in released for r, k in self.initial[i][4].items() if k and r != sh.res})
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            return _RESERVATION, f"{REASON_RESERVATION} {shown}"
        if sh.nodes > 1:
            fit_now = len(self.hosts(sh, self.snapshot()))
            return _RESOURCE, f"waiting for {sh.nodes} nodes; {fit_now} fit now"
        return _RESOURCE, self.resource_text(sh)

    def shadow_wait_text(self) -> str:
        """', expected to start in 1h 5m; ...' when the shadow's start is known, else ''."""
        if self.shadow is None or self.shadow.start is None:
            return ""
        wait = fmt_duration(self.shadow.start - self.now)
        until = wait if self.until is None else fmt_duration(self.until - self.now)
        return f", expected to start in {wait}; a task with a time limit of at most {until} may use it"

    def resource_text(self, sh: _Shape) -> str:
        ids = self.ids
        cands = list(range(self.n))
        if sh.gpu:
            if sh.gtype is not None:
                cands = [i for i in cands if self.gtype[i] == sh.gtype]
                if not cands:
                    return f"needs {_gpu_text(sh)}; no active worker has that type"
            usable = {i: len(self.free[i]) + len(self.rfree[i].get(sh.res or "", ())) for i in cands}
            best = max(cands, key=lambda i: (usable[i], -i))
            if usable[best] < sh.gpu:
                return f"needs {_gpu_text(sh)}; largest free: {usable[best]} on {ids[best]}"
            cands = [i for i in cands if usable[i] >= sh.gpu]
        with_slot = [i for i in cands if self.slots[i] > 0]
        if not with_slot:
            where = f"the {_plural(len(cands), 'worker')} with the GPUs" if sh.gpu else "any active worker"
            return f"needs a free batch slot; none free on {where}"
        best = max(with_slot, key=lambda i: (self.cpu[i], -i))
        if self.cpu[best] < sh.cpu:
            return f"needs {_plural(sh.cpu, 'CPU')}; largest free: {self.cpu[best]} on {ids[best]}"
        cands = [i for i in with_slot if self.cpu[i] >= sh.cpu]
        best = max(cands, key=lambda i: (self.mem[i], -i))
        return f"needs {sh.mem} GB memory; largest free: {self.mem[best]} GB on {ids[best]}"

    # -- anti-starvation ----------------------------------------------------------------------

    def hold_for(self, task: TaskReq, sh: _Shape, now: float) -> bool:
        """Shadow-holds, for `task`, the capacity it waits for on its best candidate workers.

        Candidates are ranked by when one node is expected to fit there (from the releases;
        never, when a needed part has no known end), then by how much is missing now; the
        shadow start is the latest time of those chosen. With no releases known this is the
        ranking by what is missing now alone."""
        self.now = now
        held_count: dict[str, int] = {}  # GPUs on a worker held by reservations sh cannot use
        for wid, per in self.held.items():
            held_count[wid] = sum(1 for rid in per.values() if rid != sh.res)
        never = float("inf")
        ranked: list[tuple[float, tuple[int, int, int, int], int]] = []
        for i in range(self.n):
            wid = self.ids[i]
            _, tg, ts, tc, tm = self.totals[wid]
            tg -= held_count.get(wid, 0)
            if sh.gpu and ((sh.gtype is not None and self.gtype[i] != sh.gtype) or tg < sh.gpu):
                continue
            if ts < 1 or tc < sh.cpu or tm < sh.mem:
                continue
            usable = len(self.free[i]) + (len(self.rfree[i].get(sh.res, ())) if sh.res else 0)
            missing = (sh.gpu - usable, sh.cpu - self.cpu[i], sh.mem - self.mem[i], 1 - self.slots[i])
            deficit = (max(0, missing[0]), max(0, missing[1]), max(0, missing[2]), max(0, missing[3]))
            if max(missing) <= 0:
                ready: float | None = now
            elif self.releases[i] or i in self.placed_rel:
                ready = ready_at(now, missing, self._releases(i, sh))
            else:
                ready = None
            ranked.append((never if ready is None else ready, deficit, i))
        if len(ranked) < sh.nodes:
            return False
        ranked.sort()
        chosen = ranked[: sh.nodes]
        start = chosen[-1][0]
        nodes = []
        for _, _, i in chosen:
            c, m, s = min(self.cpu[i], sh.cpu), min(self.mem[i], sh.mem), min(self.slots[i], 1)
            from_res = 0
            if sh.res is not None:
                from_res = min(sh.gpu, len(self.rfree[i].get(sh.res, ())))
            res_gpus = self.rfree[i][sh.res][:from_res] if sh.res is not None and from_res else []
            g = min(sh.gpu, from_res + len(self.free[i]))
            gpus = self.take(i, c, m, s, g, sh.res)
            self.hold[i] = _Held(c, m, s, [x for x in gpus if x not in res_gpus], sh.res, res_gpus)
            nodes.append(ShadowNode(self.ids[i], gpus, c, m, s))
        self.shadow = Shadow(task.id, tuple(nodes), None if start == never else start)
        return True

    def whole_hold(self, sh: _Shape) -> bool:
        """Every worker of the shadow holds a whole node of the owner: it fits there now."""
        return len(self.hold) == sh.nodes and all(
            h.cpu >= sh.cpu and h.mem >= sh.mem and h.slots >= 1 and len(h.gpus) + len(h.res_gpus) >= sh.gpu
            for h in self.hold.values()
        )

    def give_hold(self) -> list[tuple[int, tuple[int, ...]]]:
        """Ends the shadow, handing what it holds to its owner: (worker index, GPUs) per node."""
        nodes = [(i, tuple(sorted(h.res_gpus + h.gpus))) for i, h in self.hold.items()]
        self.hold, self.shadow, self.until, self.promised = {}, None, None, False
        self.version += 1
        return nodes

    def _releases(self, i: int, sh: _Shape) -> list[tuple[float, int, int, int, int]]:
        """Worker i's known releases as (at, GPUs the shape may use, cpu, memory, slots)."""
        out = []
        per = self.held.get(self.ids[i])
        for rels in (self.releases[i], self.placed_rel.get(i, ())):
            for r in rels:
                if r.at is None:
                    continue
                g = len(r.gpus) if not per else sum(1 for x in r.gpus if per.get(x, sh.res) == sh.res)
                out.append((r.at, g, r.cpu, r.memory_gb, r.slots))
        return out


def decide(
    queue: Sequence[TaskReq],
    workers: Sequence[WorkerFree],
    reservations: Sequence[ReservationHold] = (),
    *,
    now: float,
    aging_rate: float = DEFAULT_AGING_RATE,
    aging_cap: float = DEFAULT_AGING_CAP,
    shadow_single_node: bool = False,
    prefer: str | None = None,
    promise: Promise | None = None,
) -> Decision:
    """One scheduling decision over the whole queue and cluster. See the module docstring.

    ``queue``: the queued tasks, any order (fastest: by seq, or by (priority desc, seq) as the
    SQL already sorts). ``workers``: every known worker with its free capacity. ``reservations``:
    the active ones only. ``now``: POSIX seconds. ``shadow_single_node``: also give the
    anti-starvation shadow to a blocked single-node task when it is the highest blocked task.
    ``prefer``: a worker id that gets any task that fits it (the one a claim came from), ahead
    of the best-fit choice; order, reservations and holds are unchanged by it.
    ``promise``: the previous decision's ``Decision.promise``: while its owner is queued and
    blocked it keeps the shadow, held before the walk (``fetchml.core.promise``).
    """
    check_aging(aging_rate, aging_cap)
    if not queue:
        return Decision([], {})
    cluster = _Cluster(workers, reservations, prefer)
    if cluster.n == 0:
        return Decision([], dict.fromkeys(map(_SHAPE, queue), REASON_NO_WORKERS), queue=queue)

    all_shapes: set[str] = set()  # filled on the first probe only (it costs a pass over the queue)
    shapes: dict[str, _Shape] = {}
    failed: dict[str, tuple[int, str]] = {}
    no_shadow_for: set[str] = set()
    assignments: list[Placement] = []
    owner_reason: str | None = None
    scanned = 0
    streak, probe_at = 0, _PROBE_AFTER
    # Backfill, once a shadow with a known start exists: a later task whose time limit ends by
    # then may also use the held capacity. Free + held capacity only shrinks as well, so a
    # shape that failed to backfill once fails for the rest of the decision.
    bf_start: float | None = None
    bf_failed: set[str] = set()

    def shape_of(key: str) -> _Shape:
        sh = shapes.get(key)
        if sh is None:
            sh = shapes[key] = cluster.make_shape(key)
        return sh

    def fail(key: str, sh: _Shape) -> tuple[int, str]:
        f = failed[key] = sh.never if sh.never is not None else cluster.reason(sh)
        return f

    def held_text(reason: str, shadow: Shadow) -> str:
        where = ", ".join(n.worker_id for n in shadow.nodes)
        text = f"{reason}; capacity on {where} is held for it"
        if shadow.start is not None:
            text += f"; expected to start in {fmt_duration(shadow.start - now)}"
        return text

    def maybe_hold(task: TaskReq, sh: _Shape, kind: int) -> None:
        nonlocal owner_reason, bf_start
        if (
            cluster.shadow is None
            and kind in _SHADOWABLE
            and (sh.nodes > 1 or shadow_single_node)
            and sh.key not in no_shadow_for
        ):
            if cluster.hold_for(task, sh, now):
                assert cluster.shadow is not None
                owner_reason = held_text(failed[sh.key][1], cluster.shadow)
                bf_start = cluster.until = cluster.shadow.start
            else:
                no_shadow_for.add(sh.key)

    def keep(promise: Promise) -> tuple[TaskReq | None, bool]:
        """Holds, before the walk, for the owner of a kept promise if it is still queued and
        blocked. Returns (that task, whether it fits whole in the hold: then it is placed there
        at its turn)."""
        nonlocal owner_reason, bf_start
        try:
            task = queue[indexOf(map(_ID, queue), promise.task_id)]
        except ValueError:
            return None, False  # started, cancelled, or not in this (partial) queue
        sh = shape_of(task.shape)
        if sh.never is not None or not (sh.nodes > 1 or shadow_single_node):
            return None, False
        own = cluster.reason(sh)  # its own reason, against the capacity before anything is held
        if not cluster.hold_for(task, sh, now):
            return None, False
        assert cluster.shadow is not None
        owner_reason = held_text(own[1], cluster.shadow)
        kept = carry(promise, task.id, cluster.shadow.start, now)
        bf_start = cluster.until = None if kept is None else kept.start
        cluster.promised = True
        return task, cluster.whole_hold(sh)

    def place_kept(task: TaskReq, aged: float) -> None:
        """The kept owner's turn, when it fits whole in its hold: it starts there."""
        nonlocal owner_reason, bf_start
        sh = shapes[task.shape]
        nodes = cluster.give_hold()
        lim = task.time_limit_s
        if lim is not None:
            for i, gpus in nodes:
                cluster.note_release(i, now + lim, sh, gpus)
        placed = tuple(NodePlacement(rank, cluster.ids[i], gpus) for rank, (i, gpus) in enumerate(nodes))
        assignments.append(Placement(task.id, placed, aged, sh.res))
        owner_reason, bf_start = None, None

    def may_backfill(task: TaskReq) -> bool:
        lim = task.time_limit_s
        return (
            lim is not None and bf_start is not None and now + lim <= bf_start and task.shape not in bf_failed
        )

    def backfill(task: TaskReq, key: str, aged: float) -> bool:
        """Places a task that may backfill and does not fit free capacity alone; False when
        it does not fit with the held capacity either (then its shape never will)."""
        sh = shape_of(key)
        if sh.never is None:
            chosen = cluster.search_backfill(sh)
            if len(chosen) == sh.nodes:
                used = False
                nodes = []
                for rank, i in enumerate(chosen):
                    gpus, u = cluster.take_backfill(i, sh)
                    used = used or u
                    nodes.append(NodePlacement(rank, cluster.ids[i], gpus))
                assignments.append(Placement(task.id, tuple(nodes), aged, sh.res, backfill=used))
                return True
        bf_failed.add(key)
        return False

    def backfill_tail(aged: float, task: TaskReq) -> None:
        """Nothing more fits but held capacity: place, in order, the tasks after this one that
        may backfill; the others cannot fit (free capacity only shrinks) and keep their shape's
        reason. One pass over the queue, paid only when a shadow has a known start."""
        nonlocal scanned
        if bf_start is None:
            return
        seq = task.seq
        after: list[tuple[float, int, TaskReq]] = []
        # C-level pre-filter (no limit -> inf) with a second of slack; the exact test follows
        limits: Iterator[float] = map(_NO_LIMIT.get, map(_LIMIT, queue), map(_LIMIT, queue))
        for t in compress(queue, map(_GE, repeat(bf_start - now + 1.0), limits)):
            lim = t.time_limit_s
            if lim is None or now + lim > bf_start or t.shape in bf_failed:
                continue
            a = aged_priority(t.priority, hours_waited(t.created_at, now), aging_rate, aging_cap)
            if a < aged or (a == aged and t.seq > seq):  # after this task (order_key, inlined)
                after.append((-a, t.seq, t))
        if not after:
            return
        # Every other shape meets the capacity left here: settle their reasons before the
        # backfills take it (else they would read "waiting behind higher-priority tasks").
        all_failed_after_probe()
        after.sort(key=_FIRST_TWO)
        for neg_a, _, t in after:
            scanned += 1
            if t.shape not in bf_failed:
                backfill(t, t.shape, -neg_a)

    def all_failed_after_probe() -> bool:
        """Settles every shape not yet tried that cannot fit now; True when nothing can fit."""
        if not all_shapes:
            all_shapes.update(map(_SHAPE, queue))
        for key in all_shapes:
            if key not in failed:
                sh = shape_of(key)
                if sh.never is not None or len(cluster.search(sh)) < sh.nodes:
                    fail(key, sh)
        return len(failed) == len(all_shapes)

    kept, kept_whole = keep(promise) if promise is not None else (None, False)
    for aged, qi in _ordered(queue, now, aging_rate, aging_cap):
        scanned += 1
        task = queue[qi]
        if task is kept:
            kept = None
            if kept_whole:
                place_kept(task, aged)
            continue
        key = task.shape
        f = failed.get(key)
        if f is not None:
            if bf_start is not None and may_backfill(task) and backfill(task, key, aged):
                streak = 0
            else:
                maybe_hold(task, shapes[key], f[0])
                streak += 1
            if cluster.total_slots <= 0:
                backfill_tail(aged, task)
                break
            if streak >= probe_at:
                streak, probe_at = 0, probe_at * 2
                if all_failed_after_probe():
                    backfill_tail(aged, task)
                    break
            continue
        streak = 0
        sh = shape_of(key)
        chosen = [] if sh.never is not None else cluster.search(sh)
        if len(chosen) == sh.nodes:
            nodes = tuple(
                NodePlacement(rank, cluster.ids[i], cluster.take(i, sh.cpu, sh.mem, 1, sh.gpu, sh.res))
                for rank, i in enumerate(chosen)
            )
            lim = task.time_limit_s
            # (while a kept owner is still to come, it may start and leave the shadow to another)
            if lim is not None and (cluster.shadow is None or kept is not None):
                for node, i in zip(nodes, chosen, strict=True):
                    cluster.note_release(i, now + lim, sh, node.gpus)
            assignments.append(Placement(task.id, nodes, aged, sh.res))
        else:
            kind, _ = fail(key, sh)
            if not (bf_start is not None and may_backfill(task) and backfill(task, key, aged)):
                maybe_hold(task, sh, kind)
                if all_shapes and len(failed) == len(all_shapes):
                    backfill_tail(aged, task)
                    break
        if cluster.total_slots <= 0:
            backfill_tail(aged, task)
            break

    if kept is not None and kept_whole:  # the walk stopped before its turn
        waited = hours_waited(kept.created_at, now)
        place_kept(kept, aged_priority(kept.priority, waited, aging_rate, aging_cap))

    # Tasks not walked (the walk stopped because nothing more can fit) get the reason of their
    # shape against the final state, which is exactly the state they would have met; computed
    # on demand, once per shape. Shapes missing from `failed` after a full walk were all placed.
    def late_reason(key: str) -> str:
        return fail(key, shape_of(key))[1]

    reasons = _Reasons(late_reason, {k: v[1] for k, v in failed.items()})
    shadow = cluster.shadow
    return Decision(
        assignments,
        reasons,
        shadow=shadow,
        scanned=scanned,
        queue=queue,
        owner_reason=owner_reason,
        promise=None if shadow is None else carry(promise, shadow.task_id, shadow.start, now),
    )
