"""Workers: registration, heartbeats (lease renewal and commands), an operator's drain, and
the reads. Claims and reports are in services/claims, the lease sweep in services/leases.

Every state change runs through the writer, under the database-wide write lock.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import (
    TERMINAL_STATUSES,
    AuditEventType,
    Role,
    WorkerStatus,
)
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError
from fetchml.core.nodes import NodeStatus, PlacedNode, is_stopping
from fetchml.core.protocol import (
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    WorkerCapabilities,
    WorkerCommand,
    WorkerInfo,
    WorkerSlots,
)
from fetchml.events.bus import SERVICES_TOPIC, TASKS_TOPIC, EventBus, task_topic
from fetchml.host.settings import Settings
from fetchml.services.attempts import lose_node, unplace
from fetchml.services.base import read
from fetchml.services.capacity import service_holders
from fetchml.services.jupyter import (
    holds_services,
    lose_worker_services,
    unplace_services,
)
from fetchml.services.node_assignments import (
    active_rows,
    held_by,
    nodes_of,
    nodes_on,
)
from fetchml.services.principal import Principal
from fetchml.services.worker_auth import owned_worker
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import ServerMetaRow, TaskRow, WorkerRow

log = logging.getLogger("fetchml.workers")

TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
REPORTED_END = frozenset({*TERMINAL, NodeStatus.STOPPED.value})
SERVER_ID_KEY = "server_id"


def server_id_op(tx: Tx) -> str:
    """The installation's id, created by the first writer that needs it. Writes hold the
    database-wide write lock (see store.db), so two servers starting at once agree on one."""
    row = tx.session.get(ServerMetaRow, SERVER_ID_KEY)
    if row is None:
        row = ServerMetaRow(key=SERVER_ID_KEY, value=uuid.uuid4().hex)
        tx.session.add(row)
        tx.session.flush()
    return row.value


def _self_drain(
    tx: Tx, user_id: str | None, worker: WorkerRow, held: list[tuple[TaskRow, PlacedNode]], now: datetime
) -> None:
    worker.status = WorkerStatus.DRAINING.value
    for task, node in held:
        if node.slot_assigned:
            continue
        if task.node_count <= 1 or not any(n.slot_assigned for n in nodes_of(task)):
            unplace(tx, task, f"worker {worker.id} is stopping")
        else:
            lose_node(tx, task, worker.id, f"worker {worker.id} is stopping", now)
    tx.audit(
        AuditEventType.SCHEDULER_DRAIN,
        user_id=user_id,
        resource=f"worker:{worker.id}",
        action="drain",
        metadata={"previous_status": WorkerStatus.ACTIVE.value, "reason": "worker stopping"},
    )


def _unique(rows: Iterable[TaskRow]) -> list[TaskRow]:
    seen: dict[str, TaskRow] = {}
    for row in rows:
        seen.setdefault(row.id, row)
    return list(seen.values())


def _held_rows(session: Session, worker_id: str) -> list[TaskRow]:
    """Active tasks with a live node on the worker (each once)."""
    return _unique(row for row, _ in nodes_on(session, worker_id))


def worker_to_wire(row: WorkerRow, active: list[TaskRow], services: int = 0) -> WorkerInfo:
    caps = WorkerCapabilities.model_validate(row.capabilities)
    busy = len(active)
    return WorkerInfo(
        id=row.id,
        name=row.name,
        status=WorkerStatus(row.status),
        connected_at=row.connected_at,
        last_heartbeat=row.last_heartbeat,
        capabilities=caps,
        slots=WorkerSlots(
            batch_total=row.batch_total,
            batch_available=max(0, row.batch_total - busy),
            service_total=row.service_total,
            service_available=max(0, row.service_total - services),
        ),
        active_tasks=[t.id for t in active],
    )


class WorkerService:
    def __init__(self, db: Database, writer: WriteQueue, bus: EventBus, settings: Settings) -> None:
        self.db = db
        self.writer = writer
        self.bus = bus
        self.settings = settings

    # -- registration -------------------------------------------------------------------------

    async def register(self, principal: Principal, req: RegisterWorkerRequest) -> RegisterWorkerResponse:
        timeout = timedelta(seconds=self.settings.heartbeat_timeout)
        # A worker key registers only the name it was created for; admins may register any.
        if not principal.may_act_as_worker(req.name):
            raise ForbiddenError(
                f"This key may register only worker {principal.worker_name!r}, not {req.name!r}"
            )

        def op(tx: Tx) -> tuple[list[str], str]:
            now = tx.clock.now()
            server_id = server_id_op(tx)
            row = tx.session.get(WorkerRow, req.name)
            lost: list[str] = []
            if row is None:
                row = WorkerRow(
                    id=req.name, name=req.name, status="", key_id=principal.key_id, connected_at=now
                )
                tx.session.add(row)
            else:
                alive = row.status != WorkerStatus.OFFLINE.value and (
                    row.last_heartbeat is not None and row.last_heartbeat > now - timeout
                )
                # A name is bound to its key while that worker lives; once it is gone (offline
                # or silent past the timeout) another key may take the name over.
                if principal.role is not Role.ADMIN and row.key_id != principal.key_id and alive:
                    raise ConflictError(f"Worker name {req.name!r} is registered to another key")
                # A worker that registers again has restarted: whatever it held is gone.
                for task in _held_rows(tx.session, row.id):
                    lose_node(tx, task, row.id, "worker restarted", now)
                    lost.append(task.id)
                if lose_worker_services(tx, row.id, "worker_restarted", now):
                    tx.wake(SERVICES_TOPIC)
            row.status = WorkerStatus.ACTIVE.value
            row.key_id = principal.key_id
            row.capabilities = req.capabilities.model_dump(mode="json")
            row.batch_total = req.batch_slots
            row.service_total = req.service_slots
            row.connected_at = now
            row.last_heartbeat = now
            return lost, server_id

        lost, server_id = await self.writer.run(op)
        self.bus.publish(TASKS_TOPIC, *(task_topic(t) for t in lost))
        return RegisterWorkerResponse(
            worker_id=req.name,
            heartbeat_interval=self.settings.heartbeat_interval,
            heartbeat_timeout=self.settings.heartbeat_timeout,
            claim_wait=self.settings.claim_wait,
            lost_tasks=lost,
            server_id=server_id,
            claim_takes_report=True,
            report_takes_started=True,
        )

    # -- heartbeats ---------------------------------------------------------------------------

    async def heartbeat(
        self, principal: Principal, worker_id: str, req: HeartbeatRequest
    ) -> HeartbeatResponse:
        timeout = timedelta(seconds=self.settings.heartbeat_timeout)
        held = {(a.task_id, a.attempt) for a in req.active}

        def op(tx: Tx) -> HeartbeatResponse:
            now = tx.clock.now()
            worker = owned_worker(tx, principal, worker_id)
            if worker.status == WorkerStatus.OFFLINE.value:
                # Declared lost: its tasks went elsewhere. It must register again.
                return HeartbeatResponse(status=WorkerStatus.OFFLINE, drain=False, commands=[])
            worker.last_heartbeat = now
            commands: list[WorkerCommand] = []
            held_here = nodes_on(tx.session, worker_id)
            live = {(task.id, task.attempt) for task, node in held_here if node.slot_assigned}
            for task, node in held_here:
                if (task.id, task.attempt) in held:
                    task.lease_expires_at = now + timeout
                # A cancel, or a gang stopping because one of its nodes failed or was lost.
                if node.slot_assigned and is_stopping(bool(task.cancel_requested), nodes_of(task)):
                    commands.append(WorkerCommand(type="cancel", task_id=task.id, attempt=task.attempt))
            # What the worker runs but the server no longer counts as its (requeued after a
            # lost lease, or a gang that already ended): stop it, it is someone else's now.
            stale = held - live
            if stale:
                ended = {
                    (t.id, t.attempt)
                    for t in tx.session.scalars(
                        select(TaskRow).where(col(TaskRow.id).in_({tid for tid, _ in stale}))
                    ).all()
                    if t.status in TERMINAL
                    and any(
                        n.get("worker_id") == worker_id and n.get("status") in REPORTED_END
                        for n in t.node_assignments or []
                    )
                }
                # An attempt whose end this worker reported itself is just winding down; one
                # the server gave up on (lost: its nodes were cleared) must stop.
                for task_id, attempt in sorted(stale - ended):
                    commands.append(WorkerCommand(type="cancel", task_id=task_id, attempt=attempt))
            if req.stopping and worker.status == WorkerStatus.ACTIVE.value:
                # A worker shutting down (SIGTERM) drains itself: what was placed on it but
                # not started goes back to the queue, no retry spent.
                _self_drain(tx, principal.user_id, worker, held_here, now)
                unplace_services(tx, worker.id)
                held_here = [(t, n) for t, n in held_here if n.slot_assigned]
            draining = worker.status == WorkerStatus.DRAINING.value
            if draining and not held_here and not holds_services(tx.session, worker_id):
                worker.status = WorkerStatus.OFFLINE.value
            return HeartbeatResponse(status=WorkerStatus(worker.status), drain=draining, commands=commands)

        return await self.writer.run(op)

    # -- operators ----------------------------------------------------------------------------

    async def drain(self, principal: Principal, worker_id: str, ip_address: str | None = None) -> None:
        """An operator takes a worker out of service: it gets no new assignments (claims of a
        non-active worker answer nothing), its running tasks go on, and the first heartbeat at
        which it holds no task makes it offline. Draining a draining worker changes nothing;
        an offline worker cannot be drained (409: it would come back active when it registers).
        """

        def op(tx: Tx) -> None:
            row = tx.session.get(WorkerRow, worker_id)
            if row is None:
                raise NotFoundError(f"Worker {worker_id} not found")
            if row.status == WorkerStatus.OFFLINE.value:
                raise ConflictError(f"Worker {worker_id} is offline; there is nothing to drain")
            if row.status == WorkerStatus.DRAINING.value:
                return  # a repeated request: already draining, not audited twice
            previous = row.status
            row.status = WorkerStatus.DRAINING.value
            running: list[str] = []
            unplace_services(tx, worker_id)
            for task, node in nodes_on(tx.session, worker_id):
                if node.slot_assigned:
                    running.append(task.id)
                elif task.node_count <= 1 or not any(n.slot_assigned for n in nodes_of(task)):
                    # Placed here but not started: it goes back to the queue, no retry spent.
                    unplace(tx, task, f"worker {worker_id} is draining")
                else:
                    lose_node(tx, task, worker_id, f"worker {worker_id} is draining", tx.clock.now())
            tx.audit(
                AuditEventType.SCHEDULER_DRAIN,
                user_id=principal.user_id,
                resource=f"worker:{worker_id}",
                action="drain",
                ip_address=ip_address,
                metadata={
                    "previous_status": previous,
                    "active_tasks": running,
                },
            )

        await self.writer.run(op)
        self.bus.publish(TASKS_TOPIC)

    # -- reads --------------------------------------------------------------------------------

    async def list(self) -> list[WorkerInfo]:
        def q(session: Session) -> list[WorkerInfo]:
            workers = session.scalars(select(WorkerRow).order_by(col(WorkerRow.id))).all()
            rows = active_rows(session)
            services = Counter(s.worker_id for s in service_holders(session))
            return [
                worker_to_wire(w, _unique(t for t, _ in held_by(rows, w.id)), services[w.id]) for w in workers
            ]

        return await read(self.db, q)

    async def get(self, worker_id: str) -> WorkerInfo:
        def q(session: Session) -> WorkerInfo:
            row = session.get(WorkerRow, worker_id)
            if row is None:
                raise NotFoundError(f"Worker {worker_id} not found")
            services = sum(1 for s in service_holders(session) if s.worker_id == worker_id)
            return worker_to_wire(row, _held_rows(session, worker_id), services)

        return await read(self.db, q)

    async def count_active(self) -> int:
        def q(session: Session) -> int:
            return len(
                session.scalars(
                    select(col(WorkerRow.id)).where(col(WorkerRow.status) == WorkerStatus.ACTIVE.value)
                ).all()
            )

        return await read(self.db, q)
