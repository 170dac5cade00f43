from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.clock import SYSTEM_CLOCK, Clock
from fetchml.core.enums import ACTIVE_STATUSES, TaskStatus, WorkerStatus
from fetchml.core.models import QueueStats
from fetchml.services.base import read
from fetchml.store.db import Database
from fetchml.store.tables import TaskRow, WorkerRow


def start_of_today(now: datetime, tz: ZoneInfo) -> datetime:
    """'Today' is since local midnight in the server's FETCHML_TIMEZONE (UTC by default)."""
    local = now.astimezone(tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def live_task_counts(session: Session) -> dict[str, int]:
    """How many tasks are queued, and in each active status (preparing, running, collecting)."""
    status = col(TaskRow.status)
    live = [TaskStatus.QUEUED.value, *(s.value for s in ACTIVE_STATUSES)]
    return {
        s: n
        for s, n in session.execute(select(status, func.count()).where(status.in_(live)).group_by(status))
    }


class QueueService:
    def __init__(self, db: Database, *, timezone: str = "UTC", clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock
        self.tz = ZoneInfo(timezone)

    async def stats(self) -> QueueStats:
        since = start_of_today(self.clock.now(), self.tz)

        def q(session: Session) -> QueueStats:
            status = col(TaskRow.status)
            live = live_task_counts(session)
            ended: dict[str, int] = {
                s: n
                for s, n in session.execute(
                    select(status, func.count()).where(col(TaskRow.ended_at) >= since).group_by(status)
                ).all()
            }
            return QueueStats(
                queued=live.get(TaskStatus.QUEUED.value, 0),
                running=sum(live.get(s.value, 0) for s in ACTIVE_STATUSES),
                completed=ended.get(TaskStatus.COMPLETED.value, 0),
                failed=ended.get(TaskStatus.FAILED.value, 0),
                workers=session.scalar(
                    select(func.count())
                    .select_from(WorkerRow)
                    .where(col(WorkerRow.status) == WorkerStatus.ACTIVE.value)
                )
                or 0,
            )

        return await read(self.db, q)
