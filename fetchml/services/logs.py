"""Task logs: workers append numbered lines per attempt; readers page or follow them.

Lines are numbered by the worker (start_line), so a chunk sent twice after a network error is
stored once, and the order is the order the task printed them in.

Each attempt has a row in task_log_state holding its next line number and what its log holds,
so an append costs the same for the millionth chunk as for the first (no counting of lines).
A task stores at most `max_lines` lines and `max_bytes` bytes over all its attempts; what comes
after is acknowledged but dropped, and one notice line says how many lines were dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import ACTIVE_STATUSES, TERMINAL_STATUSES, Role, TaskStatus
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from fetchml.core.protocol import LogChunk, LogPage
from fetchml.events.bus import SAFETY_RECHECK, EventBus, task_topic
from fetchml.services.base import read
from fetchml.services.principal import Principal
from fetchml.services.task_rows import task_row
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import TaskLogRow, TaskLogStateRow, TaskRow, WorkerRow

PAGE_LIMIT = 5000
PAGE_BYTES = 4 * 1024 * 1024  # a page stops short of this; clients go on from next_offset
DEFAULT_MAX_LINES = 1_000_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def quota_notice(dropped: int) -> str:
    return f"[fetchml: log quota reached, {dropped} further lines dropped]"


def _storable(line: str) -> tuple[str, int]:
    """The line as every backend can store it, and its size in bytes. A NUL (PostgreSQL text
    cannot hold one) or a lone surrogate would otherwise fail the insert: a 500 that the worker
    retries forever."""
    try:
        data = line.encode("utf-8")
    except UnicodeEncodeError:
        line = line.encode("utf-8", errors="replace").decode("utf-8")
        data = line.encode("utf-8")
    if b"\x00" in data:
        line = line.replace("\x00", "\ufffd")
        data = line.encode("utf-8")
    return line, len(data)


@dataclass(frozen=True)
class AppendResult:
    """What the worker is told: the attempt's next line, and whether lines were dropped over the
    quota (later ones would be too, so it may stop sending)."""

    next_line: int
    quota_reached: bool


class LogService:
    def __init__(
        self,
        db: Database,
        writer: WriteQueue,
        bus: EventBus,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.db = db
        self.writer = writer
        self.bus = bus
        self.max_lines = max_lines
        self.max_bytes = max_bytes

    async def append(self, principal: Principal, task_id: str, chunk: LogChunk) -> AppendResult:
        max_lines, max_bytes = self.max_lines, self.max_bytes

        def op(tx: Tx) -> tuple[AppendResult, bool]:
            task = task_row(tx.session, task_id)
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
            # The task's few state rows (one per attempt), locked against a concurrent append
            # through another server process.
            states = list(
                tx.session.scalars(
                    select(TaskLogStateRow).where(col(TaskLogStateRow.task_id) == task_id).with_for_update()
                ).all()
            )
            state = next((s for s in states if s.attempt == chunk.attempt), None)
            have = state.next_line if state is not None else 0
            if chunk.start_line > have:
                # Not a 409: the worker must tell "lines are missing" from "this attempt is gone".
                raise ValidationError(
                    f"Log chunk starts at line {chunk.start_line} but the attempt's next line is {have}"
                )
            used_lines = sum(s.stored_lines for s in states)
            used_bytes = sum(s.stored_bytes for s in states)
            notice_at = next((s for s in states if s.notice_line is not None), None)
            new = chunk.lines[have - chunk.start_line :]
            if not new:
                return AppendResult(next_line=have, quota_reached=notice_at is not None), False
            if state is None:
                state = TaskLogStateRow(task_id=task_id, attempt=chunk.attempt)
                tx.session.add(state)
            stored = 0
            added_bytes = 0
            if notice_at is None:
                for raw in new:
                    line, size = _storable(raw)
                    if used_lines + stored >= max_lines or used_bytes + added_bytes + size > max_bytes:
                        break
                    tx.insert(
                        TaskLogRow,
                        {
                            "task_id": task_id,
                            "attempt": chunk.attempt,
                            "line_no": have + stored,
                            "line": line,
                        },
                    )
                    stored += 1
                    added_bytes += size
            dropped = len(new) - stored
            state.next_line = have + len(new)
            state.stored_lines += stored
            state.stored_bytes += added_bytes
            if dropped:
                if notice_at is None:
                    # The first lines over the quota: one notice in their place, kept up to date.
                    state.dropped_lines += dropped
                    state.notice_line = have + stored
                    tx.insert(
                        TaskLogRow,
                        {
                            "task_id": task_id,
                            "attempt": chunk.attempt,
                            "line_no": state.notice_line,
                            "line": quota_notice(state.dropped_lines),
                        },
                    )
                else:
                    notice_at.dropped_lines += dropped
                    tx.session.execute(
                        update(TaskLogRow)
                        .where(
                            col(TaskLogRow.task_id) == task_id,
                            col(TaskLogRow.attempt) == notice_at.attempt,
                            col(TaskLogRow.line_no) == notice_at.notice_line,
                        )
                        .values(line=quota_notice(notice_at.dropped_lines))
                    )
            tx.session.flush()
            tx.wake(task_topic(task_id))  # followers on every server, once this commits
            # "Reached" once lines were dropped, not when the quota is merely full: the notice is
            # then in the log, and the user can see that lines are missing.
            return AppendResult(next_line=state.next_line, quota_reached=dropped > 0), True

        result, changed = await self.writer.run(op)
        if changed:
            self.bus.publish(task_topic(task_id))
        return result

    async def page(
        self, task_id: str, *, offset: int | None = None, tail: int | None = None, limit: int = PAGE_LIMIT
    ) -> LogPage:
        def q(session: Session) -> LogPage:
            status = session.scalar(select(col(TaskRow.status)).where(col(TaskRow.id) == task_id))
            if status is None:
                raise NotFoundError(f"Task {task_id} not found")
            # Each attempt's rows are numbered 0..n-1 (stored lines, then the quota notice), so
            # an offset into the whole log maps to (attempt, line_no) and is read by the index,
            # without counting or skipping rows.
            counts = [
                (int(a), int(n) + (0 if notice is None else 1))
                for a, n, notice in session.execute(
                    select(
                        col(TaskLogStateRow.attempt),
                        col(TaskLogStateRow.stored_lines),
                        col(TaskLogStateRow.notice_line),
                    )
                    .where(col(TaskLogStateRow.task_id) == task_id)
                    .order_by(col(TaskLogStateRow.attempt))
                ).all()
            ]
            total = sum(n for _, n in counts)
            start = max(0, total - tail) if tail is not None else min(offset or 0, total)
            at: tuple[int, int] | None = None
            skip = start
            for attempt, n in counts:
                if skip < n:
                    at = (attempt, skip)
                    break
                skip -= n
            lines: list[str] = []
            if at is not None and limit > 0:
                attempt, first = at
                # Streamed and cut at a byte budget: 5000 maximal lines would be ~80 MB.
                rows = session.scalars(
                    select(col(TaskLogRow.line))
                    .where(
                        col(TaskLogRow.task_id) == task_id,
                        or_(
                            col(TaskLogRow.attempt) > attempt,
                            and_(col(TaskLogRow.attempt) == attempt, col(TaskLogRow.line_no) >= first),
                        ),
                    )
                    .order_by(col(TaskLogRow.attempt), col(TaskLogRow.line_no))
                    .limit(limit)
                    .execution_options(yield_per=256)
                )
                spent = 0
                for line in rows:
                    spent += len(line) + 8
                    if lines and spent > PAGE_BYTES:
                        break
                    lines.append(line)
                rows.close()
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
                # Re-read after subscribing so nothing published in between is missed. Appends
                # through other servers wake us through the feed; the timeout covers a lost wake-up.
                page = await self.page(task_id, offset=page.next_offset)
                if not page.lines and not page.done:
                    await self.bus.wait(wake, SAFETY_RECHECK)
                    page = await self.page(task_id, offset=page.next_offset)
                else:
                    wake.cancel()
            else:
                page = await self.page(task_id, offset=page.next_offset)
