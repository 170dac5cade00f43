"""Scheduler read models for operators: GET /v1/scheduler/status."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.clock import SYSTEM_CLOCK, Clock
from fetchml.core.enums import ACTIVE_STATUSES, TaskStatus, WorkerStatus
from fetchml.core.models import SchedulerStatus
from fetchml.services.base import read
from fetchml.services.capacity import holds_capacity
from fetchml.services.queue import live_task_counts
from fetchml.store.db import Database
from fetchml.store.tables import JupyterServiceRow, ReservationRow, TaskRow, WorkerRow

COMPLETED_WINDOW = timedelta(hours=24)


class SchedulerService:
    def __init__(self, db: Database, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def status(self) -> SchedulerStatus:
        """Counts at one instant (one read transaction).

        - workers_total: every worker the server knows, offline ones included (the set
          GET /v1/scheduler/workers lists); workers_active / workers_draining by status.
        - batch_queue_depth: queued tasks. service_queue_depth: queued Jupyter services.
        - tasks_running: preparing + running + collecting.
        - tasks_completed_24h: completed tasks whose ended_at is within the last 24 hours.
        - reservations_active: reservations holding capacity (active or claimed, not expired).
        """
        now = self.clock.now()

        def q(session: Session) -> SchedulerStatus:
            workers: dict[str, int] = {
                s: n
                for s, n in session.execute(
                    select(col(WorkerRow.status), func.count()).group_by(col(WorkerRow.status))
                ).all()
            }
            status = col(TaskRow.status)
            live = live_task_counts(session)
            completed = session.scalar(
                select(func.count())
                .select_from(TaskRow)
                .where(
                    status == TaskStatus.COMPLETED.value,
                    col(TaskRow.ended_at) >= now - COMPLETED_WINDOW,
                )
            )
            reservations = session.scalar(
                select(func.count()).select_from(ReservationRow).where(holds_capacity(now))
            )
            services = session.scalar(
                select(func.count())
                .select_from(JupyterServiceRow)
                .where(col(JupyterServiceRow.status) == "queued")
            )
            return SchedulerStatus(
                workers_total=sum(workers.values()),
                workers_active=workers.get(WorkerStatus.ACTIVE.value, 0),
                workers_draining=workers.get(WorkerStatus.DRAINING.value, 0),
                batch_queue_depth=live.get(TaskStatus.QUEUED.value, 0),
                service_queue_depth=services or 0,
                tasks_running=sum(live.get(s.value, 0) for s in ACTIVE_STATUSES),
                tasks_completed_24h=completed or 0,
                reservations_active=reservations or 0,
                timestamp=now,
            )

        return await read(self.db, q)
