"""Capacity: what each worker has free now, and when what it holds is expected to come free.

Free is a worker's capacity minus what the live nodes of active tasks on it hold (placed but not
yet claimed ones included), what its Jupyter services hold, and what reservations set aside.
The scheduling pass (services/placement.py), Jupyter placement and reservations all read it
inside their write transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import ReservationStatus, WorkerStatus
from fetchml.core.protocol import WorkerCapabilities
from fetchml.core.scheduling import Release, ReservationHold, WorkerFree
from fetchml.services.node_assignments import active_rows, nodes_of
from fetchml.store.tables import JupyterServiceRow, ReservationRow, TaskRow, WorkerRow

HELD_RESERVATION = (ReservationStatus.ACTIVE.value, ReservationStatus.CLAIMED.value)
# Jupyter services placed on a worker hold its capacity (GPUs, CPUs, memory, a service slot)
# in these states; `queued` ones hold nothing yet.
SERVICE_HOLDING = ("starting", "running", "stopping")


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


# The reads every claim makes, built once: a statement reused keeps its cache key, where a new
# one is rebuilt and keyed each time (SQLAlchemy's cost, not the database's).
_HELD = select(ReservationRow).where(holds_capacity(bindparam("now")))  # type: ignore[arg-type]
_SERVICE_HOLDERS = select(JupyterServiceRow).where(
    col(JupyterServiceRow.status).in_(SERVICE_HOLDING), col(JupyterServiceRow.worker_id).is_not(None)
)
_LIVE_WORKERS = (
    select(WorkerRow).where(col(WorkerRow.status) != WorkerStatus.OFFLINE.value).order_by(col(WorkerRow.id))
)


def held_reservations(session: Session, now: datetime) -> list[ReservationRow]:
    return list(session.scalars(_HELD, {"now": now}).all())


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


def cluster_state(
    session: Session, now: datetime, unit: float = 60.0, active: list[TaskRow] | None = None
) -> ClusterState:
    """Every non-offline worker's free capacity: its capacity minus what the live nodes on it
    hold (placed-but-unclaimed nodes included), and when each of those is expected to free it
    (from time limits; `unit`: seconds per limit minute, docs/scheduling.md#backfill).
    `active`: the active tasks, when the caller has just read them in this transaction."""
    workers = {w.id: w for w in session.scalars(_LIVE_WORKERS).all()}
    rows = active_rows(session) if active is None else active
    used: dict[str, list[int]] = {wid: [0, 0, 0] for wid in workers}  # cpu, memory, nodes
    taken: dict[str, set[int]] = {wid: set() for wid in workers}
    releases: dict[str, list[Release]] = {wid: [] for wid in workers}
    for row in rows:
        for n in nodes_of(row):
            wid = n.worker_id
            if wid in used and n.live:
                u = used[wid]
                u[0] += row.cpu or 0
                u[1] += row.memory_gb or 0
                u[2] += 1
                gpus = n.gpus
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
    return list(session.scalars(_SERVICE_HOLDERS).all())
