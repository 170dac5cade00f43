from __future__ import annotations

import builtins
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.aging import aged_priority
from fetchml.core.enums import ACTIVE_STATUSES, AuditEventType, Role, TaskStatus
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from fetchml.core.lifecycle import CANCELLED_ERROR, check_transition
from fetchml.core.models import (
    TASK_CONTENT_FIELDS,
    CreateTaskRequest,
    DatasetSpec,
    NodeAssignment,
    Task,
    TaskList,
)
from fetchml.core.plugins import check_task_plugins
from fetchml.core.redact import redact_text, redact_url
from fetchml.events.bus import TASKS_TOPIC, EventBus, task_topic
from fetchml.services.attempts import settle_gang
from fetchml.services.base import read
from fetchml.services.budget import DEFAULT_LIST_BYTES, big_page, size_of, within_budget
from fetchml.services.node_assignments import nodes_of
from fetchml.services.placement import Placer
from fetchml.services.plugins import enabled_plugins, task_plugin_status
from fetchml.services.principal import Principal
from fetchml.services.reservations import check_task_reservation
from fetchml.services.snapshots import check_snapshot_use
from fetchml.services.task_rows import audit_task, own_task_row, task_row
from fetchml.services.timelimits import effective_limit
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import IdempotencyKeyRow, TaskRow

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


def effective_priority(row: TaskRow, now: datetime | None, rate: float, cap: float) -> float:
    """`priority_aged`: a queued task ages from `created_at` to `now`; any other task (and any
    task when `now` is None) shows its plain priority."""
    if now is None or rate <= 0 or row.status != TaskStatus.QUEUED.value:
        return float(row.priority)
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return aged_priority(row.priority, (now - created).total_seconds() / 3600.0, rate, cap)


def task_to_wire(
    row: TaskRow,
    *,
    now: datetime | None = None,
    aging_rate: float = 0.0,
    aging_cap: float = 10.0,
    pending_reason: str | None = None,
    contents: bool = True,
    real_sources: bool = False,
) -> Task:
    """The wire Task. Without `now` (the worker protocol's answers) nothing is aged.

    Credentials in dataset sources are redacted unless `real_sources` (only the worker's
    assignment: it downloads with them). Without `contents` (a reader who is not the owner)
    the task's contents are absent from the JSON."""
    specs = [DatasetSpec.model_validate(d) for d in row.dataset_specs or []]
    if not real_sources:
        specs = [s.model_copy(update={"source": redact_url(s.source)}) for s in specs]
    task = Task(
        id=row.id,
        job_name=row.job_name,
        status=TaskStatus(row.status),
        priority=row.priority,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        worker_id=row.worker_id,
        error=row.error if real_sources or row.error is None else redact_text(row.error),
        output=row.output,
        entrypoint=row.entrypoint,
        args=row.args,
        snapshot_id=row.snapshot_id,
        datasets=list(row.datasets or []) if real_sources else [redact_url(d) for d in row.datasets or []],
        dataset_specs=specs,
        cpu=row.cpu,
        memory_gb=row.memory_gb,
        gpu=row.gpu,
        gpu_type=row.gpu_type,
        image=row.image,
        user_id=row.user_id,
        retry_count=row.retry_count,
        max_retries=row.max_retries,
        node_count=row.node_count,
        reservation_id=row.reservation_id,
        metadata=row.extra_metadata or {},
        plugin_configs=row.plugin_configs or {},
        plugin_status=row.plugin_status or {},
        node_assignments=[NodeAssignment.model_validate(n) for n in row.node_assignments or []],
        priority_aged=effective_priority(row, now, aging_rate, aging_cap),
        pending_reason=pending_reason or row.pending_reason,
        attempt=row.attempt,
        exit_code=row.exit_code,
        assigned_gpus=list(row.assigned_gpus or []),
        cancel_requested=bool(row.cancel_requested),
        time_limit_minutes=row.time_limit_minutes,
    )
    return task if contents else task.without(TASK_CONTENT_FIELDS)


def new_task_id() -> str:
    # Ids name runs; they grant nothing, so the fast PRNG (seeded from os.urandom) is enough.
    return f"{random.getrandbits(128):032x}"


def create_task_op(
    principal: Principal,
    req: CreateTaskRequest,
    default_max_retries: int,
    ip_address: str | None,
    *,
    time_limit_minutes: int | None = None,
) -> Callable[[Tx], Task]:
    """`time_limit_minutes`: the task's limit, the server's default applied (see TaskService)."""

    def op(tx: Tx) -> Task:
        plugin_status: dict[str, Any] = {}
        if req.plugin_configs:
            enabled = enabled_plugins(tx.session)
            check_task_plugins(req.plugin_configs, enabled)
            plugin_status = {name: task_plugin_status(name, enabled[name]) for name in req.plugin_configs}
        values: dict[str, Any] = {
            "id": new_task_id(),
            "job_name": req.job_name,
            "status": TaskStatus.QUEUED.value,
            "priority": req.priority,
            "created_at": tx.clock.now(),
            "started_at": None,
            "ended_at": None,
            "worker_id": None,
            "error": None,
            "output": None,
            "entrypoint": req.entrypoint,
            "args": req.args,
            "snapshot_id": req.snapshot_id,
            "datasets": list(req.datasets or []),
            "dataset_specs": [d.model_dump() for d in req.dataset_specs or []],
            "cpu": req.cpu,
            "memory_gb": req.memory_gb,
            "gpu": req.gpu,
            "gpu_type": req.gpu_type,
            "image": req.image,
            "user_id": principal.user_id,
            "retry_count": 0,
            "max_retries": req.max_retries if req.max_retries is not None else default_max_retries,
            "node_count": req.node_count,
            "reservation_id": req.reservation_id,
            "extra_metadata": dict(req.metadata or {}),
            "plugin_configs": {
                k: v.model_dump(exclude_none=True) for k, v in (req.plugin_configs or {}).items()
            },
            "plugin_status": plugin_status,
            "node_assignments": [],
            "pending_reason": None,  # worked out by the scheduler when read (see services/placement)
            "attempt": 0,
            "lease_expires_at": None,
            "assigned_gpus": [],
            "cancel_requested": False,
            "exit_code": None,
            "time_limit_minutes": time_limit_minutes,
        }
        if req.reservation_id is not None:
            check_task_reservation(tx, principal, req.reservation_id)
        if req.snapshot_id is not None:
            check_snapshot_use(tx.session, principal, req.snapshot_id)
        # A bulk insert, not an ORM object: the writer sends a whole batch in one executemany.
        tx.insert(TaskRow, values)
        audit_task(
            tx,
            AuditEventType.JOB_QUEUED,
            values["id"],
            user_id=principal.user_id,
            action="submit",
            ip_address=ip_address,
            metadata={"job_name": req.job_name, "priority": req.priority},
        )
        return task_to_wire(cast(TaskRow, SimpleNamespace(**values)))

    return op


MAX_IDEMPOTENCY_KEY = 255


def check_idempotency_key(key: str) -> str:
    """An Idempotency-Key header: 1-255 printable ASCII characters (422 otherwise)."""
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not all(0x20 <= ord(c) < 0x7F for c in key):
        raise ValidationError(
            f"Validation failed: Idempotency-Key: 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        )
    return key


def request_digest(req: CreateTaskRequest) -> str:
    """The same submission in whatever key order or spelling of defaults hashes the same."""
    canonical = json.dumps(req.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_task_op(
    principal: Principal,
    req: CreateTaskRequest,
    default_max_retries: int,
    ip_address: str | None,
    idempotency_key: str | None,
    retention: timedelta,
    *,
    time_limit_minutes: int | None = None,
) -> Callable[[Tx], tuple[Task, bool]]:
    """create_task_op, once per (user, Idempotency-Key): the key's row is inserted in the same
    transaction as the task, so both commit or neither does. Writes are serialised database-wide
    (see store/db), so two requests with one key never both get past the lookup: the second
    sees the first's row and replays its task. Returns (task, replayed)."""
    create = create_task_op(
        principal, req, default_max_retries, ip_address, time_limit_minutes=time_limit_minutes
    )
    if idempotency_key is None:
        return lambda tx: (create(tx), False)
    digest = request_digest(req)

    def op(tx: Tx) -> tuple[Task, bool]:
        now = tx.clock.now()
        # tx.session sends the earlier ops' pending rows first: a duplicate in the same batch
        # finds the row its twin just queued.
        seen = tx.session.get(IdempotencyKeyRow, (principal.user_id, idempotency_key))
        if seen is not None and _aware(seen.created_at) >= now - retention:
            if seen.request_hash != digest:
                raise ConflictError("Idempotency-Key was already used with a different request body")
            row = tx.session.scalars(select(TaskRow).where(col(TaskRow.id) == seen.task_id)).first()
            if row is not None:
                return task_to_wire(row), True
        if seen is not None:  # expired (not swept yet), or its task is gone: the key is free
            tx.session.delete(seen)
            tx.session.flush()
        task = create(tx)
        tx.insert(
            IdempotencyKeyRow,
            {
                "user_id": principal.user_id,
                "key": idempotency_key,
                "request_hash": digest,
                "task_id": task.id,
                "created_at": now,
            },
        )
        return task, False

    return op


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def expire_idempotency_keys(tx: Tx, before: datetime) -> None:
    """Idempotency-Keys older than the retention period (FETCHML_IDEMPOTENCY_RETENTION_HOURS)."""
    tx.session.execute(delete(IdempotencyKeyRow).where(col(IdempotencyKeyRow.created_at) < before))


def cancel_task_op(principal: Principal, task_id: str, ip_address: str | None) -> Callable[[Tx], Task]:
    def op(tx: Tx) -> Task:
        row = own_task_row(tx.session, task_id, principal, "You may cancel only your own tasks")
        current = TaskStatus(row.status)
        if current in ACTIVE_STATUSES and not any(n.get("slot_assigned") for n in nodes_of(row)):
            # Placed but no worker has taken it yet: nothing runs, so it ends here and now.
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
