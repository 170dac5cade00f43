"""Submitting a task: the write op that inserts its row and audits it, and the Idempotency-Key
wrapper that makes a retried submission replay the task the first one created."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from sqlalchemy import delete, select
from sqlmodel import col

from fetchml.core.enums import AuditEventType, TaskStatus
from fetchml.core.errors import ConflictError, ValidationError
from fetchml.core.models import CreateTaskRequest, Task
from fetchml.core.plugins import check_task_plugins
from fetchml.services.plugins import enabled_plugins, task_plugin_status
from fetchml.services.principal import Principal
from fetchml.services.reservations import check_task_reservation
from fetchml.services.snapshots import check_snapshot_use
from fetchml.services.task_rows import audit_task
from fetchml.services.task_wire import new_task_to_wire, task_to_wire
from fetchml.services.write_queue import Tx
from fetchml.store.tables import IdempotencyKeyRow, TaskRow


def new_task_id() -> str:
    # Ids name runs; they grant nothing, so the fast PRNG (seeded from os.urandom) is enough.
    return f"{random.getrandbits(128):032x}"


# The request fields stored as they are, in the column of the same name; create_task_op works
# out the other columns.
_FROM_REQUEST = tuple(
    name
    for name in CreateTaskRequest.model_fields
    if name in TaskRow.model_fields
    and name not in {"datasets", "dataset_specs", "max_retries", "plugin_configs", "time_limit_minutes"}
)
_read_request = attrgetter(*_FROM_REQUEST)
# A new row's columns: null unless set here or by the request. Every column is named (seq, the
# database's own, aside), so the writer batches the insert in one executemany (store/bulk.py).
# pending_reason stays null: the scheduler works it out when the task is read (services/placement).
_NEW_ROW: dict[str, Any] = {
    **dict.fromkeys(name for name in TaskRow.model_fields if name != "seq"),
    "status": TaskStatus.QUEUED.value,
    "retry_count": 0,
    "attempt": 0,
    "cancel_requested": False,
}


def new_task_values(
    principal: Principal,
    req: CreateTaskRequest,
    default_max_retries: int,
    now: datetime,
    time_limit_minutes: int | None,
    plugin_status: dict[str, Any],
) -> dict[str, Any]:
    """A submitted task's row, as TaskRow's fields."""
    return {
        **_NEW_ROW,
        **dict(zip(_FROM_REQUEST, _read_request(req), strict=True)),
        "id": new_task_id(),
        "created_at": now,
        "datasets": list(req.datasets or []),
        "dataset_specs": [d.model_dump() for d in req.dataset_specs or []],
        "user_id": principal.user_id,
        "max_retries": req.max_retries if req.max_retries is not None else default_max_retries,
        "extra_metadata": dict(req.metadata or {}),
        "plugin_configs": {k: v.model_dump(exclude_none=True) for k, v in (req.plugin_configs or {}).items()},
        "plugin_status": plugin_status,
        # New lists per row: rows of one batch must not share a mutable value.
        "node_assignments": [],
        "assigned_gpus": [],
        "time_limit_minutes": time_limit_minutes,
    }


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
        values = new_task_values(
            principal, req, default_max_retries, tx.clock.now(), time_limit_minutes, plugin_status
        )
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
        return new_task_to_wire(values)

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
