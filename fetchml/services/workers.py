"""The worker protocol: registration, heartbeats (lease renewal + commands), claims, reports
and the lease sweep that requeues the tasks of workers that went silent.

Every state change runs through the writer, under the database-wide write lock, so two
claims can never take the same task or the same GPU, even from two server processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import ACTIVE_STATUSES, AuditEventType, Role, TaskStatus, WorkerStatus
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError
from fetchml.core.lifecycle import CANCELLED_ERROR, check_transition
from fetchml.core.protocol import (
    Assignment,
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    StatusReport,
    WorkerCapabilities,
    WorkerCommand,
    WorkerInfo,
    WorkerSlots,
)
from fetchml.core.settings import Settings
from fetchml.core.timeutil import utcnow
from fetchml.events.bus import TASKS_TOPIC, EventBus, task_topic
from fetchml.services.base import read
from fetchml.services.principal import Principal
from fetchml.services.tasks import task_to_wire
from fetchml.services.uow import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import TaskRow, WorkerRow

log = logging.getLogger("fetchml.workers")

ACTIVE = [s.value for s in ACTIVE_STATUSES]
WORKER_LOST_ERROR = "worker lost"
CLAIM_CANDIDATES = 500


def _owned_worker(tx: Tx, principal: Principal, worker_id: str) -> WorkerRow:
    row = tx.session.get(WorkerRow, worker_id)
    if row is None:
        raise NotFoundError(f"Worker {worker_id} is not registered")
    if principal.role is not Role.ADMIN and row.key_id != principal.key_id:
        raise ForbiddenError(f"Worker {worker_id} belongs to another key")
    return row


def _active_tasks(session: Session, worker_id: str) -> list[TaskRow]:
    return list(
        session.scalars(
            select(TaskRow).where(col(TaskRow.worker_id) == worker_id, col(TaskRow.status).in_(ACTIVE))
        ).all()
    )


def lose_task(tx: Tx, row: TaskRow, reason: str, now: datetime) -> None:
    """The attempt's worker is gone: retry the task as a whole, or fail it once retries run out."""
    current = TaskStatus(row.status)
    if row.cancel_requested:
        new, error = TaskStatus.FAILED, CANCELLED_ERROR
    elif row.retry_count < row.max_retries:
        new, error = TaskStatus.QUEUED, None
    else:
        new, error = TaskStatus.FAILED, WORKER_LOST_ERROR
    check_transition(current, new)
    previous_worker = row.worker_id
    row.status = new.value
    row.lease_expires_at = None
    row.assigned_gpus = []
    row.node_assignments = []
    if new is TaskStatus.QUEUED:
        row.retry_count += 1
        row.worker_id = None
        row.started_at = None
        row.error = None
        tx.audit(
            AuditEventType.JOB_QUEUED,
            user_id=row.user_id,
            resource=f"task:{row.id}",
            action="requeue",
            success=True,
            error=reason,
            metadata={"attempt": row.attempt, "retry_count": row.retry_count, "worker_id": previous_worker},
        )
    else:
        row.ended_at = now
        row.error = error
        tx.audit(
            AuditEventType.JOB_COMPLETED,
            user_id=row.user_id,
            resource=f"task:{row.id}",
            action="fail",
            success=False,
            error=error,
            metadata={"attempt": row.attempt, "reason": reason, "worker_id": previous_worker},
        )


def worker_to_wire(row: WorkerRow, active: list[TaskRow]) -> WorkerInfo:
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
            service_available=row.service_total,
        ),
        active_tasks=[t.id for t in active],
    )


def _fits(task: Any, caps: WorkerCapabilities, used: dict[str, Any]) -> bool:
    """`task`: a TaskRow, or a row of its node_count, cpu, memory_gb, gpu and gpu_type."""
    if task.node_count != 1:
        return False  # gang placement belongs to the scheduler (multi-node)
    if (task.cpu or 0) > caps.cpu_cores - used["cpu"]:
        return False
    if (task.memory_gb or 0) > caps.memory_gb - used["memory_gb"]:
        return False
    need_gpus = task.gpu or 0
    if need_gpus:
        if task.gpu_type and (caps.gpu_type or "").lower() != task.gpu_type.lower():
            return False
        if need_gpus > len(used["free_gpus"]):
            return False
    return True


class WorkerService:
    def __init__(self, db: Database, writer: WriteQueue, bus: EventBus, settings: Settings) -> None:
        self.db = db
        self.writer = writer
        self.bus = bus
        self.settings = settings

    # -- registration -------------------------------------------------------------------------

    async def register(self, principal: Principal, req: RegisterWorkerRequest) -> RegisterWorkerResponse:
        timeout = timedelta(seconds=self.settings.heartbeat_timeout)

        def op(tx: Tx) -> list[str]:
            now = utcnow()
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
                for task in _active_tasks(tx.session, row.id):
                    lose_task(tx, task, "worker restarted", now)
                    lost.append(task.id)
            row.status = WorkerStatus.ACTIVE.value
            row.key_id = principal.key_id
            row.capabilities = req.capabilities.model_dump(mode="json")
            row.batch_total = req.batch_slots
            row.service_total = req.service_slots
            row.connected_at = now
            row.last_heartbeat = now
            return lost

        lost = await self.writer.run(op)
        self.bus.publish(TASKS_TOPIC, *(task_topic(t) for t in lost))
        return RegisterWorkerResponse(
            worker_id=req.name,
            heartbeat_interval=self.settings.heartbeat_interval,
            heartbeat_timeout=self.settings.heartbeat_timeout,
            claim_wait=self.settings.claim_wait,
            lost_tasks=lost,
        )

    # -- heartbeats ---------------------------------------------------------------------------

    async def heartbeat(
        self, principal: Principal, worker_id: str, req: HeartbeatRequest
    ) -> HeartbeatResponse:
        timeout = timedelta(seconds=self.settings.heartbeat_timeout)
        held = {(a.task_id, a.attempt) for a in req.active}

        def op(tx: Tx) -> HeartbeatResponse:
            now = utcnow()
            worker = _owned_worker(tx, principal, worker_id)
            if worker.status == WorkerStatus.OFFLINE.value:
                # Declared lost: its tasks went elsewhere. It must register again.
                return HeartbeatResponse(status=WorkerStatus.OFFLINE, drain=False, commands=[])
            worker.last_heartbeat = now
            commands: list[WorkerCommand] = []
            active = _active_tasks(tx.session, worker_id)
            for task in active:
                if (task.id, task.attempt) in held:
                    task.lease_expires_at = now + timeout
                if task.cancel_requested:
                    commands.append(WorkerCommand(type="cancel", task_id=task.id, attempt=task.attempt))
            draining = worker.status == WorkerStatus.DRAINING.value
            if draining and not active:
                worker.status = WorkerStatus.OFFLINE.value
            return HeartbeatResponse(status=WorkerStatus(worker.status), drain=draining, commands=commands)

        return await self.writer.run(op)

    # -- claims -------------------------------------------------------------------------------

    def _claim_op(self, principal: Principal, worker_id: str) -> Callable[[Tx], Assignment | None]:
        lease = timedelta(seconds=self.settings.heartbeat_timeout)

        def op(tx: Tx) -> Assignment | None:
            now = utcnow()
            worker = _owned_worker(tx, principal, worker_id)
            if worker.status != WorkerStatus.ACTIVE.value:
                return None
            worker.last_heartbeat = now
            caps = WorkerCapabilities.model_validate(worker.capabilities)
            active = _active_tasks(tx.session, worker_id)
            if len(active) >= worker.batch_total:
                return None
            taken = {g for t in active for g in (t.assigned_gpus or [])}
            all_gpus = [g.index for g in caps.gpus] or list(range(caps.gpu_count))
            used: dict[str, Any] = {
                "cpu": sum(t.cpu or 0 for t in active),
                "memory_gb": sum(t.memory_gb or 0 for t in active),
                "free_gpus": [g for g in all_gpus if g not in taken],
            }
            # Only the columns placement looks at: loading whole rows (JSON columns and all) for
            # every candidate made each claim cost milliseconds per queued task, under the lock.
            candidates = tx.session.execute(
                select(
                    col(TaskRow.seq),
                    col(TaskRow.node_count),
                    col(TaskRow.cpu),
                    col(TaskRow.memory_gb),
                    col(TaskRow.gpu),
                    col(TaskRow.gpu_type),
                )
                .where(col(TaskRow.status) == TaskStatus.QUEUED.value)
                .order_by(col(TaskRow.priority).desc(), col(TaskRow.seq))
                .limit(CLAIM_CANDIDATES)
            ).all()
            for candidate in candidates:
                if not _fits(candidate, caps, used):
                    continue
                task = tx.session.scalars(select(TaskRow).where(col(TaskRow.seq) == candidate.seq)).one()
                check_transition(TaskStatus(task.status), TaskStatus.PREPARING)
                gpus = used["free_gpus"][: task.gpu or 0]
                task.status = TaskStatus.PREPARING.value
                task.worker_id = worker_id
                task.attempt += 1
                task.assigned_gpus = gpus
                task.lease_expires_at = now + lease
                task.pending_reason = None
                task.node_assignments = [{"node_id": 0, "worker_id": worker_id, "slot_assigned": True}]
                return Assignment(
                    task=task_to_wire(task), attempt=task.attempt, gpus=gpus, lease_expires_at=now + lease
                )
            return None

        return op

    async def claim(self, principal: Principal, worker_id: str, wait: float) -> Assignment | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait, self.settings.claim_wait))
        while True:
            wake = self.bus.listen(TASKS_TOPIC)
            try:
                assignment = await self.writer.run(self._claim_op(principal, worker_id))
            except BaseException:
                wake.cancel()  # a 403/404 must not leave a waiter behind
                raise
            if assignment is not None:
                wake.cancel()
                self.bus.publish(task_topic(assignment.task.id))
                return assignment
            remaining = deadline - loop.time()
            if remaining <= 0:
                wake.cancel()
                return None
            # Also re-check on a short timer: another server process may have queued the task.
            await self.bus.wait(wake, min(remaining, 1.0))

    # -- reports ------------------------------------------------------------------------------

    async def report(self, principal: Principal, task_id: str, rep: StatusReport) -> Any:
        lease = timedelta(seconds=self.settings.heartbeat_timeout)

        def op(tx: Tx) -> Any:
            now = utcnow()
            task = tx.session.scalars(select(TaskRow).where(col(TaskRow.id) == task_id)).first()
            if task is None:
                raise NotFoundError(f"Task {task_id} not found")
            current = TaskStatus(task.status)
            if task.attempt != rep.attempt or current not in ACTIVE_STATUSES or task.worker_id is None:
                raise ConflictError(
                    f"Stale report for task {task_id}: attempt {rep.attempt} is not its live attempt "
                    f"(attempt {task.attempt}, {current.value})"
                )
            _owned_worker(tx, principal, task.worker_id)
            new = TaskStatus(rep.status)
            if new is current:
                task.lease_expires_at = now + lease
                return task_to_wire(task)
            check_transition(current, new)
            task.status = new.value
            task.lease_expires_at = now + lease
            if new is TaskStatus.RUNNING:
                task.started_at = now
                tx.audit(
                    AuditEventType.JOB_STARTED,
                    user_id=task.user_id,
                    resource=f"task:{task.id}",
                    action="start",
                    metadata={
                        "attempt": task.attempt,
                        "worker_id": task.worker_id,
                        "gpus": task.assigned_gpus,
                    },
                )
            elif new in (TaskStatus.COMPLETED, TaskStatus.FAILED):
                task.ended_at = now
                task.lease_expires_at = None
                task.exit_code = rep.exit_code
                if rep.output is not None:
                    task.output = rep.output
                if task.cancel_requested and new is TaskStatus.FAILED:
                    task.error = CANCELLED_ERROR
                elif new is TaskStatus.FAILED:
                    task.error = rep.error or (
                        f"exit code {rep.exit_code}" if rep.exit_code is not None else "failed"
                    )
                else:
                    task.error = None
                tx.audit(
                    AuditEventType.JOB_COMPLETED,
                    user_id=task.user_id,
                    resource=f"task:{task.id}",
                    action="complete" if new is TaskStatus.COMPLETED else "fail",
                    success=new is TaskStatus.COMPLETED,
                    error=task.error,
                    metadata={
                        "attempt": task.attempt,
                        "worker_id": task.worker_id,
                        "exit_code": rep.exit_code,
                    },
                )
            return task_to_wire(task)

        result = await self.writer.run(op)
        self.bus.publish(task_topic(task_id))
        if rep.status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            self.bus.publish(TASKS_TOPIC)
        return result

    # -- leases -------------------------------------------------------------------------------

    async def sweep(self) -> list[str]:
        """Workers silent past the heartbeat timeout go offline; tasks whose lease ran out are
        retried (retry_count + 1) or failed as "worker lost"."""
        timeout = timedelta(seconds=self.settings.heartbeat_timeout)

        def op(tx: Tx) -> list[str]:
            now = utcnow()
            stale_workers = tx.session.scalars(
                select(WorkerRow).where(
                    col(WorkerRow.status) != WorkerStatus.OFFLINE.value,
                    col(WorkerRow.last_heartbeat) < now - timeout,
                )
            ).all()
            for worker in stale_workers:
                worker.status = WorkerStatus.OFFLINE.value
            gone = {w.id for w in stale_workers}
            expired = tx.session.scalars(
                select(TaskRow).where(
                    col(TaskRow.status).in_(ACTIVE),
                    (col(TaskRow.lease_expires_at) < now) | col(TaskRow.worker_id).in_(gone),
                )
            ).all()
            for task in expired:
                lose_task(tx, task, "lease expired: no heartbeat from its worker", now)
            return [t.id for t in expired]

        lost = await self.writer.run(op)
        if lost:
            log.warning("requeued or failed %d task(s) of lost workers: %s", len(lost), ", ".join(lost))
            self.bus.publish(TASKS_TOPIC, *(task_topic(t) for t in lost))
        return lost

    async def run_sweeper(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:
                log.exception("lease sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.sweep_interval)

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
            tx.audit(
                AuditEventType.SCHEDULER_DRAIN,
                user_id=principal.user_id,
                resource=f"worker:{worker_id}",
                action="drain",
                ip_address=ip_address,
                metadata={
                    "previous_status": previous,
                    "active_tasks": [t.id for t in _active_tasks(tx.session, worker_id)],
                },
            )

        await self.writer.run(op)

    # -- reads --------------------------------------------------------------------------------

    async def list(self) -> list[WorkerInfo]:
        def q(session: Session) -> list[WorkerInfo]:
            workers = session.scalars(select(WorkerRow).order_by(col(WorkerRow.id))).all()
            active = session.scalars(select(TaskRow).where(col(TaskRow.status).in_(ACTIVE))).all()
            by_worker: dict[str, list[TaskRow]] = {}
            for t in active:
                by_worker.setdefault(t.worker_id or "", []).append(t)
            return [worker_to_wire(w, by_worker.get(w.id, [])) for w in workers]

        return await read(self.db, q)

    async def get(self, worker_id: str) -> WorkerInfo:
        def q(session: Session) -> WorkerInfo:
            row = session.get(WorkerRow, worker_id)
            if row is None:
                raise NotFoundError(f"Worker {worker_id} not found")
            return worker_to_wire(row, _active_tasks(session, worker_id))

        return await read(self.db, q)

    async def count_active(self) -> int:
        def q(session: Session) -> int:
            return len(
                session.scalars(
                    select(col(WorkerRow.id)).where(col(WorkerRow.status) == WorkerStatus.ACTIVE.value)
                ).all()
            )

        return await read(self.db, q)
