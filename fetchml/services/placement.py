"""The server side of scheduling: read the cluster and the queue, run the pure decision
(`fetchml.core.scheduling.decide`), write its placements, and explain the rest.

A scheduling pass runs inside a write transaction (under the database-wide write lock that
every writer takes, on SQLite and PostgreSQL alike), so two passes, in one process or in two
servers sharing a database, never see the same free GPU: placements are decided and written
before the lock is released. Placements are written for every worker at once; each worker
then picks up its own (see `ClaimService.claim`). What is free comes from
`services/capacity.py`.

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
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import CompoundSelect, bindparam, func, select, union_all
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.aging import MAX_PRIORITY, MIN_PRIORITY
from fetchml.core.enums import AuditEventType, ReservationStatus, TaskStatus
from fetchml.core.lifecycle import check_transition
from fetchml.core.nodes import NodeStatus, PlacedNode
from fetchml.core.scheduling import (
    Decision,
    Placement,
    Promise,
    TaskReq,
    decide,
)
from fetchml.services.capacity import ClusterState, cluster_state
from fetchml.services.node_assignments import set_nodes
from fetchml.services.write_queue import Tx
from fetchml.store.tables import TaskRow

REASONS_MAX_AGE = 2.0  # seconds a decision's pending reasons are served before recomputing
MEMO_MAX_AGE = 5.0  # an unchanged state is re-decided at least this often (other servers' edits)
QUEUE_HEAD = 1000  # at most this many queued tasks per priority a claim's pass reads first
QUEUE_HEAD_MIN = 32


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


# Built once (see services/capacity._HELD).
_QUEUED_COUNT_AND_TOP = select(func.count(), func.max(col(TaskRow.seq))).where(
    col(TaskRow.status) == TaskStatus.QUEUED.value
)
_TASKS_BY_IDS = select(TaskRow).where(col(TaskRow.id).in_(bindparam("ids", expanding=True)))


@lru_cache(maxsize=32)
def _head_query(head: int, with_also: bool) -> CompoundSelect[Any]:
    """The oldest `head` queued tasks of each priority, and the task bound as `also` if it is
    queued. One statement (one round trip under the lock), one index range scan per priority;
    `also` comes in its own part, so it is read once. Built once per shape: a claim used to
    spend more on building and keying this statement than on running it."""
    queued = col(TaskRow.status) == TaskStatus.QUEUED.value
    other = (col(TaskRow.id) != bindparam("also"),) if with_also else ()
    parts = [
        select(*_QUEUE_COLUMNS)
        .where(queued, col(TaskRow.priority) == p, *other)
        .order_by(col(TaskRow.seq))
        .limit(head)
        .subquery()
        for p in range(MAX_PRIORITY, MIN_PRIORITY - 1, -1)
    ]
    if with_also:
        parts.append(select(*_QUEUE_COLUMNS).where(queued, col(TaskRow.id) == bindparam("also")).subquery())
    return union_all(*(select(part) for part in parts))


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
            query = _head_query(head, also is not None)
            rows = list(session.execute(query, {"also": also} if also is not None else {}).all())
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

    def schedule(
        self, tx: Tx, now: datetime, worker_id: str, active: list[TaskRow] | None = None
    ) -> tuple[set[str], list[TaskRow]]:
        """One pass under the write lock, for the claim of `worker_id`; returns the ids of the
        workers that got new nodes, and the tasks placed. `active`: the active tasks, if the
        caller read them in this transaction (nothing changed since); with the tasks placed,
        they are the active tasks after the pass.

        The decision covers the whole cluster, in queue order, preferring the claiming worker
        for any task that fits it. Kept: what lands on the claiming worker, and every gang
        (its nodes are claimed by their workers one by one). Dropped: single-node tasks that
        went to other workers; they get them when they ask. So work never waits on a worker
        that is not asking for it (busy, or dead but not yet timed out).
        """
        session = tx.session
        state = cluster_state(session, now, self.time_limit_unit, active)
        me = next((w for w in state.free if w.id == worker_id), None)
        if me is None or not me.active or me.batch_available <= 0:
            return set(), []
        count, top = session.execute(_QUEUED_COUNT_AND_TOP).one()
        if not count:
            return set(), []
        sig = (count, top, state.signature())
        memo = self._memo.get(worker_id)
        if memo is not None and memo[0] == sig and time.monotonic() - memo[1] < MEMO_MAX_AGE:
            return set(), []  # nothing changed since a pass that gave this worker nothing
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
            return set(), []
        self._memo.clear()
        return self._apply(tx, kept, state, now)

    @staticmethod
    def _kept(decision: Decision, worker_id: str) -> list[Placement]:
        return [p for p in decision.assignments if len(p.nodes) > 1 or p.nodes[0].worker_id == worker_id]

    def _apply(
        self, tx: Tx, placements: list[Placement], state: ClusterState, now: datetime
    ) -> tuple[set[str], list[TaskRow]]:
        touched: set[str] = set()
        session = tx.session
        ids = [p.task_id for p in placements]
        rows = {r.id: r for r in session.scalars(_TASKS_BY_IDS, {"ids": ids}).all()}
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
                    PlacedNode(
                        node_id=n.rank,
                        worker_id=n.worker_id,
                        slot_assigned=False,
                        gpus=list(n.gpus),
                        status=NodeStatus.ASSIGNED,
                    )
                    for n in p.nodes
                ],
            )
            touched.update(n.worker_id for n in p.nodes)
            res = state.reservations.get(p.reservation_id or "")
            if res is not None and res.status == ReservationStatus.ACTIVE.value:
                res.status = ReservationStatus.CLAIMED.value
                tx.audit(
                    AuditEventType.RESERVATION_CLAIMED,
                    user_id=row.user_id,
                    resource=f"reservation:{res.id}",
                    action="claim",
                    metadata={"task_id": row.id},
                )
        return touched, [rows[p.task_id] for p in placements]

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
