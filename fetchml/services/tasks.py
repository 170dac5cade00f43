"""Tasks: `TaskService` (submit, list, get, cancel, priority) and the write ops behind cancel and
priority. The wire conversion lives in services/task_wire.py and the submission ops (with
Idempotency-Keys) in services/task_submit.py; their names are re-exported here for importers."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import ACTIVE_STATUSES, AuditEventType, Role, TaskStatus
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from fetchml.core.lifecycle import CANCELLED_ERROR, check_transition
from fetchml.core.models import CreateTaskRequest, Task, TaskList
from fetchml.events.bus import TASKS_TOPIC, EventBus, task_topic
from fetchml.services.attempts import settle_gang
from fetchml.services.base import read
from fetchml.services.budget import DEFAULT_LIST_BYTES, big_page, size_of, within_budget
from fetchml.services.node_assignments import nodes_of
from fetchml.services.placement import Placer
from fetchml.services.principal import Principal
from fetchml.services.task_rows import audit_task, own_task_row, task_row
from fetchml.services.task_submit import (
    MAX_IDEMPOTENCY_KEY,
    check_idempotency_key,
    create_task_op,
    expire_idempotency_keys,
    new_task_id,
    request_digest,
    submit_task_op,
)
from fetchml.services.task_wire import effective_priority, task_to_wire
from fetchml.services.timelimits import effective_limit
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import TaskRow

# Every public name the module had before the split: importers (claims, leases, tests) keep
# naming them from here.
__all__ = [
    "MAX_IDEMPOTENCY_KEY",
    "TASK_SIZE",
    "TaskService",
    "cancel_task_op",
    "check_idempotency_key",
    "create_task_op",
    "effective_priority",
    "expire_idempotency_keys",
    "new_task_id",
    "request_digest",
    "set_priority_op",
    "submit_task_op",
    "task_to_wire",
]

# The columns whose size varies from task to task (all bounded at submission, see core/models).
TASK_SIZE = size_of(
    col(TaskRow.args),
    col(TaskRow.entrypoint),
    col(TaskRow.error),
    col(TaskRow.output),
    json_columns=[
        col(TaskRow.datasets),
        col(TaskRow.dataset_specs),
        col(TaskRow.extra_metadata),
        col(TaskRow.plugin_configs),
        col(TaskRow.plugin_status),
        col(TaskRow.node_assignments),
        col(TaskRow.assigned_gpus),
    ],
)


def cancel_task_op(principal: Principal, task_id: str, ip_address: str | None) -> Callable[[Tx], Task]:
    def op(tx: Tx) -> Task:
        row = own_task_row(tx.session, task_id, principal, "You may cancel only your own tasks")
        current = TaskStatus(row.status)
        if current in ACTIVE_STATUSES and not any(n.slot_assigned for n in nodes_of(row)):
            # Placed but no worker has taken it yet: nothing runs, so it ends here and now.
            check_transition(current, TaskStatus.QUEUED)
            row.lease_expires_at = None
            row.node_assignments = []
            row.assigned_gpus = []
            current = TaskStatus.QUEUED
            row.status = current.value
        if current in ACTIVE_STATUSES:
            # Its worker stops it (told in its next heartbeat) and reports it failed/cancelled.
            if not row.cancel_requested:
                row.cancel_requested = True
                if row.node_count > 1:
                    settle_gang(tx, row, nodes_of(row), tx.clock.now(), "cancelled")
                audit_task(
                    tx,
                    AuditEventType.JOB_CANCELLED,
                    row.id,
                    user_id=principal.user_id,
                    action="cancel_requested",
                    ip_address=ip_address,
                    metadata={
                        "previous_status": current.value,
                        "owner": row.user_id,
                        "worker_id": row.worker_id,
                    },
                )
            return task_to_wire(row)
        if current is not TaskStatus.QUEUED:
            raise ConflictError(f"Task {task_id} is {current.value} and cannot be cancelled")
        check_transition(current, TaskStatus.FAILED)
        row.status = TaskStatus.FAILED.value
        row.error = CANCELLED_ERROR
        row.ended_at = tx.clock.now()
        row.pending_reason = None
        audit_task(
            tx,
            AuditEventType.JOB_CANCELLED,
            row.id,
            user_id=principal.user_id,
            action="cancel",
            ip_address=ip_address,
            metadata={"previous_status": current.value, "owner": row.user_id},
        )
        return task_to_wire(row)

    return op


def set_priority_op(
    principal: Principal,
    task_id: str,
    priority: int,
    ip_address: str | None,
    wire: Callable[[TaskRow], Task],
) -> Callable[[Tx], Task]:
    def op(tx: Tx) -> Task:
        row = own_task_row(
            tx.session, task_id, principal, "You may change the priority of your own tasks only"
        )
        current = TaskStatus(row.status)
        if current is not TaskStatus.QUEUED and current not in ACTIVE_STATUSES:
            raise ConflictError(f"Task {task_id} is {current.value}; its priority can no longer change")
        old = row.priority
        if old != priority:  # setting the same value again changes nothing and is not audited
            row.priority = priority
            audit_task(
                tx,
                AuditEventType.PRIORITY_CHANGED,
                row.id,
                user_id=principal.user_id,
                action="set_priority",
                ip_address=ip_address,
                metadata={
                    "old_priority": old,
                    "new_priority": priority,
                    "owner": row.user_id,
                    "status": current.value,
                },
            )
        return wire(row)

    return op


class TaskService:
    def __init__(
        self,
        db: Database,
        writer: WriteQueue,
        *,
        bus: EventBus | None = None,
        default_max_retries: int = 3,
        aging_rate: float = 0.0,
        aging_cap: float = 10.0,
        placer: Placer | None = None,
        max_datasets: int = 64,
        list_budget: int = DEFAULT_LIST_BYTES,
        shared_contents: bool = False,
        idempotency_retention: timedelta = timedelta(hours=24),
        default_time_limit: int | None = None,
        max_time_limit: int | None = None,
    ) -> None:
        self.db = db
        self.shared_contents = shared_contents  # FETCHML_SHARED_TASK_CONTENTS
        self.placer = placer
        self.max_datasets = max_datasets  # FETCHML_MAX_DATASETS_PER_TASK
        self.list_budget = list_budget  # FETCHML_MAX_LIST_BYTES
        self.writer = writer
        self.bus = bus or EventBus()
        self.default_max_retries = default_max_retries
        self.aging_rate = aging_rate  # FETCHML_PRIORITY_AGING_PER_HOUR; 0 = no aging
        self.aging_cap = aging_cap  # FETCHML_PRIORITY_AGING_CAP
        self.idempotency_retention = idempotency_retention  # FETCHML_IDEMPOTENCY_RETENTION_HOURS
        self.default_time_limit = default_time_limit  # FETCHML_DEFAULT_TIME_LIMIT_MINUTES
        self.max_time_limit = max_time_limit  # FETCHML_MAX_TIME_LIMIT_MINUTES

    def _wire(
        self,
        row: TaskRow,
        now: datetime | None = None,
        reason: str | None = None,
        viewer: Principal | None = None,
    ) -> Task:
        return task_to_wire(
            row,
            now=now or self.writer.clock.now(),
            aging_rate=self.aging_rate,
            aging_cap=self.aging_cap,
            pending_reason=reason,
            contents=viewer is None or self.may_see_contents(viewer, row.user_id),
        )

    def may_see_contents(self, viewer: Principal, owner: str) -> bool:
        """Args, logs, artifacts... of `owner`'s task: the owner and admins, or with
        FETCHML_SHARED_TASK_CONTENTS every user."""
        return viewer.may_see_contents_of(owner) or (self.shared_contents and viewer.role is Role.USER)

    async def check_contents(self, viewer: Principal, task_id: str) -> None:
        """404 for an unknown task, 403 for a task whose contents `viewer` may not read."""

        def q(session: Session) -> str | None:
            return session.scalar(select(col(TaskRow.user_id)).where(col(TaskRow.id) == task_id))

        owner = await read(self.db, q)
        if owner is None:
            raise NotFoundError(f"Task {task_id} not found")
        if not self.may_see_contents(viewer, owner):
            raise ForbiddenError("Only the task's owner and admins may read its logs, output and artifacts")

    def _reasons(self, session: Session, rows: Sequence[TaskRow], now: datetime) -> dict[str, str]:
        if self.placer is None:
            return {}
        return self.placer.reasons(session, rows, now)

    async def create(
        self, principal: Principal, req: CreateTaskRequest, ip_address: str | None = None
    ) -> Task:
        task, _ = await self.submit(principal, req, ip_address)
        return task

    async def submit(
        self,
        principal: Principal,
        req: CreateTaskRequest,
        ip_address: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Task, bool]:
        """A new task, or with an `idempotency_key` seen before (same user, same body) the task
        it created: (task, replayed). The same key with another body is a ConflictError."""
        for field, items in (("dataset_specs", req.dataset_specs), ("datasets", req.datasets)):
            if items and len(items) > self.max_datasets:
                raise ValidationError(
                    f"Validation failed: {field}: at most {self.max_datasets} datasets per task"
                )
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        limit = effective_limit(req.time_limit_minutes, self.default_time_limit, self.max_time_limit)
        op = submit_task_op(
            principal,
            req,
            self.default_max_retries,
            ip_address,
            idempotency_key,
            self.idempotency_retention,
            time_limit_minutes=limit,
        )
        task, replayed = await self.writer.run(op)
        if not replayed:
            self.bus.publish(TASKS_TOPIC)
        return task, replayed

    async def get(self, task_id: str, viewer: Principal | None = None) -> Task:
        def q(session: Session) -> Task:
            row = task_row(session, task_id)
            now = self.writer.clock.now()
            return self._wire(row, now, self._reasons(session, [row], now).get(row.id), viewer)

        return await read(self.db, q)

    async def list(
        self,
        *,
        status: TaskStatus | None = None,
        user_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        viewer: Principal | None = None,
    ) -> TaskList:
        def q(session: Session) -> TaskList:
            conds: list[ColumnElement[bool]] = []
            if status is not None:
                conds.append(col(TaskRow.status) == status.value)
            if user_id is not None:
                conds.append(col(TaskRow.user_id) == user_id)
            total = session.scalar(select(func.count()).select_from(TaskRow).where(*conds)) or 0
            # The page's keys, then their sizes; only the rows that fit the byte budget are loaded.
            # The keys alone come from an index (ix_tasks_seq, ix_tasks_status_seq, ...): a deep
            # offset skips index entries, not the table's rows.
            newest = col(TaskRow.seq).desc()
            keys = select(col(TaskRow.seq)).where(*conds).order_by(newest).limit(limit).offset(offset)
            sized = session.execute(
                select(col(TaskRow.seq), TASK_SIZE)
                .where(col(TaskRow.seq).in_(keys.scalar_subquery()))
                .order_by(newest)
            )
            seqs = within_budget(sized, self.list_budget)
            rows = (
                session.scalars(select(TaskRow).where(col(TaskRow.seq).in_(seqs)).order_by(newest)).all()
                if seqs
                else []
            )
            now = self.writer.clock.now()  # one instant for the whole page
            reasons = self._reasons(session, rows, now)
            return TaskList(
                tasks=[self._wire(r, now, reasons.get(r.id), viewer) for r in rows],
                total=total,
                limit=limit,
                offset=offset,
            )

        async with big_page(limit):
            return await read(self.db, q)

    async def queue_head(self, limit: int, viewer: Principal | None = None) -> builtins.list[Task]:
        """The first `limit` queued tasks in base-priority order (oldest first within one),
        each with its pending reason."""

        def q(session: Session) -> builtins.list[Task]:
            rows = session.scalars(
                select(TaskRow)
                .where(col(TaskRow.status) == TaskStatus.QUEUED.value)
                .order_by(col(TaskRow.priority).desc(), col(TaskRow.seq))
                .limit(limit)
            ).all()
            now = self.writer.clock.now()
            reasons = self._reasons(session, rows, now)
            return [self._wire(r, now, reasons.get(r.id), viewer) for r in rows]

        return await read(self.db, q)

    async def cancel(self, principal: Principal, task_id: str, ip_address: str | None = None) -> Task:
        task = await self.writer.run(cancel_task_op(principal, task_id, ip_address))
        self.bus.publish(task_topic(task_id))
        return task

    async def set_priority(
        self, principal: Principal, task_id: str, priority: int, ip_address: str | None = None
    ) -> Task:
        """The owner or an admin re-prioritises a queued or active task (audited)."""
        task = await self.writer.run(set_priority_op(principal, task_id, priority, ip_address, self._wire))
        if self.placer is not None:
            self.placer.invalidate()
        self.bus.publish(task_topic(task_id), TASKS_TOPIC)
        return task
