"""A use case's first and last steps on one task: load its row (404), check it is the caller's
(403), and audit what was done to it, each written once for every service."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import AuditEventType
from fetchml.core.errors import ForbiddenError, NotFoundError
from fetchml.services.principal import Principal
from fetchml.services.write_queue import Tx
from fetchml.store.tables import TaskRow


def task_row(session: Session, task_id: str) -> TaskRow:
    """The task's row, or NotFoundError."""
    row = session.scalars(select(TaskRow).where(col(TaskRow.id) == task_id)).first()
    if row is None:
        raise NotFoundError(f"Task {task_id} not found")
    return row


def own_task_row(session: Session, task_id: str, principal: Principal, refusal: str) -> TaskRow:
    """The task's row when `principal` owns it or is an admin; ForbiddenError(refusal) otherwise.
    A task that does not exist is a 404 for everyone."""
    row = task_row(session, task_id)
    if not principal.is_admin and row.user_id != principal.user_id:
        raise ForbiddenError(refusal)
    return row


def audit_task(
    tx: Tx,
    event_type: AuditEventType,
    task_id: str,
    *,
    user_id: str | None,
    action: str,
    ip_address: str | None = None,
    metadata: dict[str, Any] | None = None,
    part: str = "",
) -> None:
    """An audit event about a task (resource `task:ID`, or `task:ID/PART` for a part of it such
    as one artifact), in the transaction that changed it."""
    tx.audit(
        event_type,
        user_id=user_id,
        resource=f"task:{task_id}" + (f"/{part}" if part else ""),
        action=action,
        ip_address=ip_address,
        metadata=metadata,
    )
