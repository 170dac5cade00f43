"""Capacity bookkeeping during one decision: the free capacity left on each active worker.

`Cluster` is built from the workers and reservations passed to the decision and only shrinks
while the decision runs (`take`): that is what lets the walk memoise a failed shape. It finds
workers for a task (`search`, best fit, the asking worker first), keeps a best-fit index by free
GPUs, withholds reserved GPUs from all but their reservation, and snapshots what is free for the
pending reasons (`fetchml.core.scheduling.explain`). It also carries the state of the
anti-starvation shadow (what is held, for whom, until when), which
`fetchml.core.scheduling.shadow` sets and reads. `Shape` is a task's resource shape parsed
once per decision.

Pure: no I/O; one instance per decision.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Sequence
from dataclasses import dataclass

from fetchml.core.scheduling.types import Release, ReservationHold, Shadow, WorkerFree, parse_shape

__all__ = ["Cluster", "Held", "Shape"]


@dataclass(slots=True)
class Shape:
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
class Held:
    """What is still held for the shadow owner on one worker (backfill takes from it)."""

    cpu: int
    mem: int
    slots: int
    gpus: list[int]  # unreserved
    res: str | None  # the owner's reservation, if it may use one
    res_gpus: list[int]  # GPUs of that reservation


class Cluster:
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
        self.hold: dict[int, Held] = {}
        # Releases of the tasks placed in this decision so far (worker index -> Release), for
        # planning the shadow's start; only tasks with a time limit ever release.
        self.placed_rel: dict[int, list[Release]] = {}
        self.now = 0.0  # set by hold_for
        self.until: float | None = None  # tasks ending by then may use the hold (backfill)
        self.promised = False  # the shadow is a promise kept from an earlier decision

    # -- shapes -------------------------------------------------------------------------------

    def make_shape(self, key: str) -> Shape:
        """The shape of a `shape_key`; the caller sets its ``never`` (explain.never)."""
        cpu, mem, gpu, nodes, adm, gt, rid, uid = parse_shape(key)
        res: str | None = None
        if rid:
            r = self.reservations.get(rid)
            if r is not None and (adm or uid == r.user_id):
                res = rid
        return Shape(key, cpu, mem, gpu, gt.lower() if gt else None, gt, nodes, res)

    # -- live placement -----------------------------------------------------------------------

    def search(self, sh: Shape) -> list[int]:
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

    def note_release(self, i: int, at: float, sh: Shape, gpus: tuple[int, ...]) -> None:
        """A task placed in this decision frees this node at `at` (its time limit)."""
        self.placed_rel.setdefault(i, []).append(Release(at, gpus, sh.cpu, sh.mem, 1))

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
