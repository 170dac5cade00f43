"""Task logs: workers append numbered lines per attempt; readers page or follow them.

Lines are numbered by the worker (start_line), so a chunk sent twice after a network error is
stored once, and the order is the order the task printed them in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import ACTIVE_STATUSES, TERMINAL_STATUSES, Role, TaskStatus
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError
from fetchml.core.protocol import LogChunk, LogPage
from fetchml.events.bus import EventBus, task_topic
from fetchml.services.base import read
from fetchml.services.principal import Principal
from fetchml.services.uow import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import TaskLogRow, TaskRow, WorkerRow

PAGE_LIMIT = 5000


class LogService:
    def __init__(self, db: Database, writer: WriteQueue, bus: EventBus) -> None:
        self.db = db
        self.writer = writer
        self.bus = bus

    async def append(self, principal: Principal, task_id: str, chunk: LogChunk) -> int:
        def op(tx: Tx) -> int:
            task = tx.session.scalars(select(TaskRow).where(col(TaskRow.id) == task_id)).first()
            if task is None:
                raise NotFoundError(f"Task {task_id} not found")
            if (
                task.attempt != chunk.attempt
                or task.worker_id is None
                or TaskStatus(task.status) not in ACTIVE_STATUSES
            ):
                raise ConflictError(
                    f"Stale log chunk for task {task_id}: attempt {chunk.attempt} is not its live attempt"
                )
            worker = tx.session.get(WorkerRow, task.worker_id)
            if principal.role is not Role.ADMIN and (worker is None or worker.key_id != principal.key_id):
                raise ForbiddenError("Task is held by another worker")
            have = (
                tx.session.scalar(
                    select(func.count())
                    .select_from(TaskLogRow)
                    .where(col(TaskLogRow.task_id) == task_id, col(TaskLogRow.attempt) == chunk.attempt)
                )
                or 0
            )
            if chunk.start_line > have:
                raise ConflictError(
                    f"Log chunk starts at line {chunk.start_line} but {have} lines are stored"
                )
            new = chunk.lines[have - chunk.start_line :]
            for i, line in enumerate(new):
                tx.insert(
                    TaskLogRow,
                    {"task_id": task_id, "attempt": chunk.attempt, "line_no": have + i, "line": line},
                )
            return len(new)

        added = await self.writer.run(op)
        if added:
            self.bus.publish(task_topic(task_id))
        return added

    async def page(
        self, task_id: str, *, offset: int | None = None, tail: int | None = None, limit: int = PAGE_LIMIT
    ) -> LogPage:
        def q(session: Session) -> LogPage:
            status = session.scalar(select(col(TaskRow.status)).where(col(TaskRow.id) == task_id))
            if status is None:
                raise NotFoundError(f"Task {task_id} not found")
            total = (
                session.scalar(
                    select(func.count()).select_from(TaskLogRow).where(col(TaskLogRow.task_id) == task_id)
                )
                or 0
            )
            start = max(0, total - tail) if tail is not None else min(offset or 0, total)
            lines = list(
                session.scalars(
                    select(col(TaskLogRow.line))
                    .where(col(TaskLogRow.task_id) == task_id)
                    .order_by(col(TaskLogRow.attempt), col(TaskLogRow.line_no))
                    .offset(start)
                    .limit(limit)
                ).all()
            )
            nxt = start + len(lines)
            st = TaskStatus(status)
            return LogPage(
                task_id=task_id,
                status=st,
                offset=start,
                next_offset=nxt,
                lines=lines,
                done=st in TERMINAL_STATUSES and nxt >= total,
            )

        return await read(self.db, q)

    async def follow(
        self, task_id: str, *, offset: int | None = None, tail: int | None = None
    ) -> AsyncIterator[list[str]]:
        """Pages of new lines until the task has ended and every line has been yielded."""
        page = await self.page(task_id, offset=offset, tail=tail)
        while True:
            if page.lines:
                yield page.lines
            if page.done:
                return
            if len(page.lines) < PAGE_LIMIT:
                wake = self.bus.listen(task_topic(task_id))
                # Re-read after subscribing so nothing published in between is missed; the
                # timeout covers writers in other server processes.
                page = await self.page(task_id, offset=page.next_offset)
                if not page.lines and not page.done:
                    await self.bus.wait(wake, 1.0)
                    page = await self.page(task_id, offset=page.next_offset)
                else:
                    wake.cancel()
            else:
                page = await self.page(task_id, offset=page.next_offset)
