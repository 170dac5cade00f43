"""Database-wide numbers for GET /metrics, read at scrape time.

They describe the database, not this process: every server on one PostgreSQL database reads the
same values, so a dashboard aggregates them with `max`, never `sum` (docs/metrics.md). The
server layer turns this plain snapshot into Prometheus families; nothing here knows the format.

Cost per scrape: GROUP BY counts over indexed columns for tasks and the queue, MAX over the audit
chain's primary key, and, for GPUs, the capabilities of the workers that are not offline and the
placements of the active tasks: both bounded by the size of the cluster, never by the queue or
the history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.aging import MAX_PRIORITY, MIN_PRIORITY
from fetchml.core.enums import TaskStatus, WorkerStatus
from fetchml.core.protocol import WorkerCapabilities
from fetchml.services.base import read
from fetchml.services.capacity import gpu_indices
from fetchml.services.node_assignments import ACTIVE, nodes_of
from fetchml.store.db import Database
from fetchml.store.tables import AuditEventRow, TaskRow, WorkerRow


@dataclass(frozen=True)
class ClusterMetrics:
    # Every status of the enums is present (0 when none): a series that vanishes at zero would
    # read as "no data" instead of 0 on a dashboard.
    tasks_by_status: dict[str, int] = field(default_factory=dict)
    queued_by_priority: dict[int, int] = field(default_factory=dict)
    workers_by_status: dict[str, int] = field(default_factory=dict)
    gpus_total: int = 0  # on workers that are not offline
    gpus_allocated: int = 0  # held by live nodes of active tasks on those workers
    audit_chain_length: int = 0


def _counts(session: Session, column: object, *where: object) -> dict[object, int]:
    stmt = select(column, func.count()).group_by(column)  # type: ignore[call-overload]
    if where:
        stmt = stmt.where(*where)
    return {key: int(n) for key, n in session.execute(stmt).all()}


def _gpus(session: Session) -> tuple[int, int]:
    workers = session.execute(
        select(col(WorkerRow.id), col(WorkerRow.capabilities)).where(
            col(WorkerRow.status) != WorkerStatus.OFFLINE.value
        )
    ).all()
    total = 0
    for _wid, caps in workers:
        try:
            total += len(gpu_indices(WorkerCapabilities.model_validate(caps)))
        except ValueError:  # a row no current model reads: count it as no GPUs, not a failed scrape
            continue
    live_workers = {wid for wid, _ in workers}
    allocated = 0
    placed = session.execute(
        select(
            col(TaskRow.status),
            col(TaskRow.worker_id),
            col(TaskRow.assigned_gpus),
            col(TaskRow.node_assignments),
        ).where(col(TaskRow.status).in_(ACTIVE))
    ).all()
    for status, worker_id, assigned, nodes in placed:
        # A transient row carrying only the placement columns: nodes_of's reading of them
        # (older rows without node entries included) stays the one definition.
        row = TaskRow(status=status, worker_id=worker_id, assigned_gpus=assigned, node_assignments=nodes)  # type: ignore[call-arg]
        for node in nodes_of(row):
            if node.worker_id in live_workers and node.live:
                allocated += len(node.gpus)
    return total, allocated


class MetricsService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def snapshot(self) -> ClusterMetrics:
        """One read transaction, so the numbers agree with each other."""

        def q(session: Session) -> ClusterMetrics:
            by_status = _counts(session, col(TaskRow.status))
            queued = _counts(session, col(TaskRow.priority), col(TaskRow.status) == TaskStatus.QUEUED.value)
            workers = _counts(session, col(WorkerRow.status))
            total, allocated = _gpus(session)
            chain = session.scalar(select(func.max(col(AuditEventRow.sequence_num))))
            return ClusterMetrics(
                tasks_by_status={s.value: by_status.get(s.value, 0) for s in TaskStatus},
                queued_by_priority={p: queued.get(p, 0) for p in range(MIN_PRIORITY, MAX_PRIORITY + 1)},
                workers_by_status={s.value: workers.get(s.value, 0) for s in WorkerStatus},
                gpus_total=total,
                gpus_allocated=allocated,
                audit_chain_length=int(chain or 0),
            )

        return await read(self.db, q)
