"""The server side of scheduling: read the cluster and the queue, run the pure decision
(`fetchml.core.scheduling.decide`), write its placements, and explain the rest.

A scheduling pass runs inside a write transaction (under the database-wide write lock that
every writer takes, on SQLite and PostgreSQL alike), so two passes, in one process or in two
servers sharing a database, never see the same free GPU: placements are decided and written
before the lock is released. Placements are written for every worker at once; each worker
then picks up its own (see `WorkerService.claim`).

The blocked gang holding the shadow keeps it between passes (`Placer._promise`, in memory;
`fetchml.core.scheduling.shadow`): each pass hands the previous pass's promise to the decision.

Pending reasons are not written to every queued row (100k rows rewritten per pass would cost
more than the decision); reads take them from the latest decision, at most `REASONS_MAX_AGE`
seconds old, or run a read-only decision against the current state.
"""

from __future__ import annotations

import time
from bisect import insort
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, union_all
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.aging import MAX_PRIORITY, MIN_PRIORITY
from fetchml.core.enums import AuditEventType, TaskStatus, WorkerStatus
from fetchml.core.lifecycle import check_transition
from fetchml.core.protocol import WorkerCapabilities
from fetchml.core.scheduling import (
    Decision,
    Placement,
    Promise,
    Release,
    ReservationHold,
    TaskReq,
    WorkerFree,
    decide,
)
from fetchml.services.node_assignments import ASSIGNED, active_rows, is_live, nodes_of, set_nodes
from fetchml.services.write_queue import Tx
from fetchml.store.tables import JupyterServiceRow, ReservationRow, TaskRow, WorkerRow

HELD_RESERVATION = ("active", "claimed")
# Jupyter services placed on a worker hold its capacity (GPUs, CPUs, memory, a service slot)
# in these states; `queued` ones hold nothing yet.
SERVICE_HOLDING = ("starting", "running", "stopping")
REASONS_MAX_AGE = 2.0  # seconds a decision's pending reasons are served before recomputing
MEMO_MAX_AGE = 5.0  # an unchanged state is re-decided at least this often (other servers' edits)
QUEUE_HEAD = 1000  # at most this many queued tasks per priority a claim's pass reads first
QUEUE_HEAD_MIN = 32


def gpu_indices(caps: WorkerCapabilities) -> list[int]:
    return [g.index for g in caps.gpus] or list(range(caps.gpu_count))


@dataclass
class ClusterState:
    workers: dict[str, WorkerRow]
    free: list[WorkerFree]
    holds: list[ReservationHold]
    reservations: dict[str, ReservationRow]
    rows: list[TaskRow]  # active tasks
    services_used: dict[str, int] = field(default_factory=dict)  # worker id -> live services on it

    def can_place_any(self) -> bool:
        return any(w.active and w.batch_available > 0 for w in self.free)

    def signature(self) -> tuple[Any, ...]:
        return (
            tuple(
                (w.id, w.active, w.free_cpu, w.free_memory_gb, w.free_gpus, w.batch_available)
                for w in self.free
            ),
            tuple(sorted(self.reservations)),
        )


def holds_capacity(now: datetime) -> ColumnElement[bool]:
    """The reservations that still hold capacity at `now`: active or claimed, not yet expired."""
    return and_(col(ReservationRow.status).in_(HELD_RESERVATION), col(ReservationRow.expires_at) > now)


def held_reservations(session: Session, now: datetime) -> list[ReservationRow]:
    return list(session.scalars(select(ReservationRow).where(holds_capacity(now))).all())


# Past a node's start + its time limit, the worker still stops it (its stop grace) and collects
# its outputs before the capacity is free: planned releases allow this much for that.
RELEASE_ALLOWANCE = 60.0
# A node placed but not started yet is planned to start within this long.
START_ALLOWANCE = 60.0


def _release_at(
    started: datetime | None, limit_minutes: int | None, now: datetime, unit: float
) -> float | None:
    """When a node holding capacity is expected to free it (POSIX seconds), None: not known."""
    if not limit_minutes:
        return None
    start = started.timestamp() if started is not None else now.timestamp() + START_ALLOWANCE
    return start + limit_minutes * unit + RELEASE_ALLOWANCE


def cluster_state(session: Session, now: datetime, unit: float = 60.0) -> ClusterState:
    """Every non-offline worker's free capacity: its capacity minus what the live nodes on it
    hold (placed-but-unclaimed nodes included), and when each of those is expected to free it
    (from time limits; `unit`: seconds per limit minute, docs/scheduling.md#backfill)."""
    workers = {
        w.id: w
        for w in session.scalars(
            select(WorkerRow)
            .where(col(WorkerRow.status) != WorkerStatus.OFFLINE.value)
            .order_by(col(WorkerRow.id))
        ).all()
    }
    rows = active_rows(session)
    used: dict[str, list[int]] = {wid: [0, 0, 0] for wid in workers}  # cpu, memory, nodes
    taken: dict[str, set[int]] = {wid: set() for wid in workers}
    releases: dict[str, list[Release]] = {wid: [] for wid in workers}
    for row in rows:
        for n in nodes_of(row):
            wid = n["worker_id"]
            if wid in used and is_live(n):
                u = used[wid]
                u[0] += row.cpu or 0
                u[1] += row.memory_gb or 0
                u[2] += 1
                gpus = n.get("gpus") or []
                taken[wid].update(gpus)
                at = _release_at(row.started_at, row.time_limit_minutes, now, unit)
                releases[wid].append(Release(at, tuple(gpus), row.cpu or 0, row.memory_gb or 0, 1))
    services_used: dict[str, int] = {}
    for svc in service_holders(session):
        wid = svc.worker_id or ""
        if wid in used:
            u = used[wid]
            u[0] += svc.cpu
            u[1] += svc.memory_gb
            taken[wid].update(svc.gpus or [])
            services_used[wid] = services_used.get(wid, 0) + 1
            at = _release_at(svc.started_at, svc.time_limit_minutes, now, unit)
            if at is not None:  # a service takes no batch slot
                releases[wid].append(Release(at, tuple(svc.gpus or []), svc.cpu, svc.memory_gb, 0))
    free: list[WorkerFree] = []
    for wid, w in workers.items():
        caps = WorkerCapabilities.model_validate(w.capabilities)
        all_gpus = gpu_indices(caps)
        u = used[wid]
        free.append(
            WorkerFree(
                id=wid,
                free_cpu=max(0, caps.cpu_cores - u[0]),
                free_memory_gb=max(0, caps.memory_gb - u[1]),
                free_gpus=tuple(g for g in all_gpus if g not in taken[wid]),
                gpu_type=caps.gpu_type,
                batch_available=max(0, w.batch_total - u[2]),
                active=w.status == WorkerStatus.ACTIVE.value,
                total_cpu=caps.cpu_cores,
                total_memory_gb=caps.memory_gb,
                total_gpus=len(all_gpus),
                batch_total=w.batch_total,
                releases=tuple(releases[wid]),
            )
        )
    reservations = {r.id: r for r in held_reservations(session, now)}
    holds = [
        ReservationHold(
            id=r.id,
            user_id=r.user_id,
            gpus={wid: tuple(idx) for wid, idx in (r.gpus or {}).items()},
            gpu_type=r.gpu_type,
        )
        for r in reservations.values()
    ]
    return ClusterState(workers, free, holds, reservations, rows, services_used)


def service_holders(session: Session) -> list[JupyterServiceRow]:
    """The Jupyter services that hold capacity on a worker now."""
    return list(
        session.scalars(
            select(JupyterServiceRow).where(
                col(JupyterServiceRow.status).in_(SERVICE_HOLDING),
                col(JupyterServiceRow.worker_id).is_not(None),
            )
        ).all()
    )


_QUEUE_COLUMNS = (
    col(TaskRow.seq),
    col(TaskRow.id),
    col(TaskRow.priority),
    col(TaskRow.created_at),
    col(TaskRow.cpu),
    col(TaskRow.memory_gb),
    col(TaskRow.gpu),
    col(TaskRow.gpu_type),
    col(TaskRow.node_count),
    col(TaskRow.reservation_id),
    col(TaskRow.user_id),
    col(TaskRow.time_limit_minutes),
)


class Placer:
    """Runs scheduling passes and serves pending reasons. One per server process.

    Passes run on the writer thread, reasons on read threads, with no lock between them: a
    reader must never hold up the writer (a big queue takes a while to read). What they share
    is replaced by single assignments (`_reqs`, `_last`) or changed by single dict operations
    (`_memo`), each atomic here; a lost race costs a cache miss, never a wrong placement, since
    placements are decided from the database under its write lock.
    """

    def __init__(
        self, *, aging_rate: float, aging_cap: float, lease_seconds: float, time_limit_unit: float = 60.0
    ) -> None:
        self.time_limit_unit = time_limit_unit
        self.aging_rate = aging_rate
        self.aging_cap = aging_cap
        self.lease = timedelta(seconds=lease_seconds)
        # seq -> TaskReq: building one costs microseconds, 100k of them most of a decision
        self._reqs: dict[int, TaskReq] = {}
        # worker id -> (state signature, when) of a pass that gave that worker nothing
        self._memo: dict[str, tuple[tuple[Any, ...], float]] = {}
        self._last: tuple[float, Decision, dict[str, TaskReq]] | None = None
        # The shadow owner's promise, kept from pass to pass so that a later arrival cannot
        # take its capacity. Only passes (the writer) change it; read-only decisions use it.
        # Per process: servers sharing a database each keep their own, which at worst protects
        # two gangs at once. Wrong or stale, it costs nothing: decide() drops an owner that is
        # no longer queued or blocked.
        self._promise: Promise | None = None

    def invalidate(self) -> None:
        """Something the queue signature cannot see changed (a priority)."""
        self._memo.clear()

    # -- the queue ----------------------------------------------------------------------------

    def load_queue(
        self, session: Session, held: Iterable[str], head: int | None = None, also: str | None = None
    ) -> tuple[list[TaskReq], bool]:
        """The queued tasks as TaskReqs; with `head`, only the oldest `head` of each priority
        (aging keeps FIFO within a priority, so the next tasks to run are among them), and the
        task `also` if it is queued (the promised shadow owner: it must not drop out of a
        decision because older tasks of its priority fill the head). Returns (tasks, truncated)."""
        held_ids = set(held)
        queued = col(TaskRow.status) == TaskStatus.QUEUED.value
        truncated = False
        if head is None:
            rows = list(
                session.execute(
                    select(*_QUEUE_COLUMNS)
                    .where(queued)
                    .order_by(col(TaskRow.priority).desc(), col(TaskRow.seq))
                ).all()
            )
        else:
            # One statement (one round trip under the lock), one index range scan per priority.
            # `also` comes in its own part, so it is read once.
            other = (col(TaskRow.id) != also,) if also is not None else ()
            parts = [
                select(*_QUEUE_COLUMNS)
                .where(queued, col(TaskRow.priority) == p, *other)
                .order_by(col(TaskRow.seq))
                .limit(head)
                .subquery()
                for p in range(MAX_PRIORITY, MIN_PRIORITY - 1, -1)
            ]
            if also is not None:
                parts.append(select(*_QUEUE_COLUMNS).where(queued, col(TaskRow.id) == also).subquery())
            rows = list(session.execute(union_all(*(select(part) for part in parts))).all())
            extra = rows.pop() if also is not None and rows and rows[-1].id == also else None
            per_priority = Counter(r.priority for r in rows)
            truncated = any(n >= head for n in per_priority.values())
            if extra is not None:
                # into (priority desc, seq) order, as the rest: the decision's fast path
                insort(rows, extra, key=lambda r: (-r.priority, r.seq))
        cache = self._reqs
        fresh: dict[int, TaskReq] = {}
        queue: list[TaskReq] = []
        for r in rows:
            # A reservation that expired (or never existed) no longer matters: the task runs
            # on shared capacity like any other. Ownership was checked at submission.
            rid = r.reservation_id if r.reservation_id in held_ids else None
            req = cache.get(r.seq)
            limit = r.time_limit_minutes * self.time_limit_unit if r.time_limit_minutes else None
            if (
                req is None
                or req.priority != r.priority
                or req.reservation_id != rid
                or req.time_limit_s != limit
            ):
                req = TaskReq(
                    id=r.id,
                    seq=r.seq,
                    priority=r.priority,
                    created_at=r.created_at.timestamp(),
                    cpu=r.cpu or 0,
                    memory_gb=r.memory_gb or 0,
                    gpu=r.gpu or 0,
                    gpu_type=r.gpu_type,
                    node_count=r.node_count or 1,
                    reservation_id=rid,
                    user_id=r.user_id,
                    is_admin=rid is not None,
                    time_limit_s=limit,
                )
            fresh[r.seq] = req
            queue.append(req)
        if head is None or len(cache) > 40 * head:
            self._reqs = fresh
        else:
            cache.update(fresh)  # a partial read must not evict the rest (bounded just above)
        return queue, truncated

    def _decide(
        self,
        queue: list[TaskReq],
        state: ClusterState,
        now: datetime,
        prefer: str | None = None,
        keep: bool = True,
        promise: bool = False,
    ) -> Decision:
        """One decision; `keep`: its reasons are served; `promise`: its promise is kept (a pass
        whose placements are written)."""
        decision = decide(
            queue,
            state.free,
            state.holds,
            now=now.timestamp(),
            aging_rate=self.aging_rate,
            aging_cap=self.aging_cap,
            prefer=prefer,
            promise=self._promise,
        )
        if keep:
            self._last = (time.monotonic(), decision, {t.id: t for t in queue})
        if promise:
            self._promise = decision.promise
        return decision

    # -- a pass -------------------------------------------------------------------------------

    def schedule(self, tx: Tx, now: datetime, worker_id: str) -> set[str]:
        """One pass under the write lock, for the claim of `worker_id`; returns the ids of the
        workers that got new nodes.

        The decision covers the whole cluster, in queue order, preferring the claiming worker
        for any task that fits it. Kept: what lands on the claiming worker, and every gang
        (its nodes are claimed by their workers one by one). Dropped: single-node tasks that
        went to other workers; they get them when they ask. So work never waits on a worker
        that is not asking for it (busy, or dead but not yet timed out).
        """
        session = tx.session
        state = cluster_state(session, now, self.time_limit_unit)
        me = next((w for w in state.free if w.id == worker_id), None)
        if me is None or not me.active or me.batch_available <= 0:
            return set()
        count, top = session.execute(
            select(func.count(), func.max(col(TaskRow.seq))).where(
                col(TaskRow.status) == TaskStatus.QUEUED.value
            )
        ).one()
        if not count:
            return set()
        sig = (count, top, state.signature())
        memo = self._memo.get(worker_id)
        if memo is not None and memo[0] == sig and time.monotonic() - memo[1] < MEMO_MAX_AGE:
            return set()  # nothing changed since a pass that gave this worker nothing
        # Enough of each priority's head to fill every free slot a few times over.
        free_slots = sum(w.batch_available for w in state.free if w.active)
        head = max(QUEUE_HEAD_MIN, min(QUEUE_HEAD, 4 * free_slots))
        also = None if self._promise is None else self._promise.task_id
        queue, truncated = self.load_queue(session, state.reservations, head=head, also=also)
        decision = self._decide(queue, state, now, worker_id, keep=not truncated, promise=True)
        kept = self._kept(decision, worker_id)
        if not kept and truncated:
            # Every head task was blocked: the whole queue may hold one that fits.
            queue, _ = self.load_queue(session, state.reservations)
            kept = self._kept(self._decide(queue, state, now, worker_id, promise=True), worker_id)
        if not kept:
            self._memo[worker_id] = (sig, time.monotonic())
            return set()
        self._memo.clear()
        return self._apply(tx, kept, state, now)

    @staticmethod
    def _kept(decision: Decision, worker_id: str) -> list[Placement]:
        return [p for p in decision.assignments if len(p.nodes) > 1 or p.nodes[0].worker_id == worker_id]

    def _apply(self, tx: Tx, placements: list[Placement], state: ClusterState, now: datetime) -> set[str]:
        touched: set[str] = set()
        session = tx.session
        ids = [p.task_id for p in placements]
        rows = {r.id: r for r in session.scalars(select(TaskRow).where(col(TaskRow.id).in_(ids))).all()}
        for p in placements:
            row = rows[p.task_id]
            check_transition(TaskStatus(row.status), TaskStatus.PREPARING)
            first = p.nodes[0]
            row.status = TaskStatus.PREPARING.value
            row.attempt += 1
            row.worker_id = first.worker_id
            row.assigned_gpus = list(first.gpus)
            row.lease_expires_at = now + self.lease
            row.pending_reason = None
            set_nodes(
                row,
                [
                    {
                        "node_id": n.rank,
                        "worker_id": n.worker_id,
                        "slot_assigned": False,
                        "gpus": list(n.gpus),
                        "status": ASSIGNED,
                    }
                    for n in p.nodes
                ],
            )
            touched.update(n.worker_id for n in p.nodes)
            res = state.reservations.get(p.reservation_id or "")
            if res is not None and res.status == "active":
                res.status = "claimed"
                tx.audit(
                    AuditEventType.RESERVATION_CLAIMED,
                    user_id=row.user_id,
                    resource=f"reservation:{res.id}",
                    action="claim",
                    metadata={"task_id": row.id},
                )
        return touched

    # -- reasons ------------------------------------------------------------------------------

    def reasons(self, session: Session, rows: Iterable[TaskRow], now: datetime) -> dict[str, str]:
        """Pending reasons for the queued ones among `rows`."""
        queued = [r.id for r in rows if r.status == TaskStatus.QUEUED.value]
        if not queued:
            return {}
        last = self._last
        if (
            last is None
            or time.monotonic() - last[0] > REASONS_MAX_AGE
            or any(t not in last[2] for t in queued)
        ):
            state = cluster_state(session, now, self.time_limit_unit)
            queue, _ = self.load_queue(session, state.reservations)
            self._decide(queue, state, now)
            last = self._last
            assert last is not None
        _, decision, by_id = last
        out: dict[str, str] = {}
        for tid in queued:
            req = by_id.get(tid)
            if req is not None:
                reason = decision.reason_for(req)
                if reason is not None:
                    out[tid] = reason
                else:
                    # placed by that decision, not yet written (a read-only decision, or the
                    # write is still on its way): it is about to start
                    out[tid] = "starting: capacity is free for it"
        return out
