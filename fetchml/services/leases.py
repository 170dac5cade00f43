"""Leases: the sweep that takes back what silent workers held.

Workers silent past the heartbeat timeout go offline and their tasks are requeued (or failed
once out of retries); a task whose lease ran out goes the same way. The same sweep expires
reservations and Idempotency-Keys, culls idle Jupyter services and stops overtime ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from fetchml.core.enums import WorkerStatus
from fetchml.core.errors import FetchmlError
from fetchml.events.bus import SERVICES_TOPIC, TASKS_TOPIC, EventBus, task_topic
from fetchml.host.settings import Settings
from fetchml.services.attempts import lose_node, lose_task
from fetchml.services.jupyter import cull_idle, lose_worker_services, stop_overtime_services
from fetchml.services.node_assignments import ACTIVE, active_rows, held_by
from fetchml.services.reservations import expire_reservations
from fetchml.services.tasks import expire_idempotency_keys
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.tables import WorkerRow

log = logging.getLogger("fetchml.workers")


class LeaseService:
    def __init__(self, writer: WriteQueue, bus: EventBus, settings: Settings) -> None:
        self.writer = writer
        self.bus = bus
        self.settings = settings
        self._next_key_sweep = datetime.min.replace(tzinfo=UTC)  # expired Idempotency-Keys

    # -- leases -------------------------------------------------------------------------------

    async def sweep(self) -> list[str]:
        """Workers silent past the heartbeat timeout go offline; tasks whose lease ran out are
        retried (retry_count + 1) or failed as "worker lost".

        Grace: nothing is expired until one heartbeat timeout after `writer.healthy_since` (the
        start of this process, or the end of the last stall it saw). A lease or heartbeat that
        ran out while this server could not take heartbeats says nothing about the worker.
        With several servers on one database each sweeper uses its own: a restart of one does
        not pause the others' sweeps, so their workers get no pass; a database-wide stall (a
        lock, PostgreSQL away) is seen by every server, and each grants the grace."""
        timeout = timedelta(seconds=self.settings.heartbeat_timeout)
        retention = timedelta(hours=self.settings.idempotency_retention_hours)

        def op(tx: Tx) -> list[str]:
            now = tx.clock.now()
            changed = expire_reservations(tx, now)
            if now >= self._next_key_sweep:
                expire_idempotency_keys(tx, now - retention)
                self._next_key_sweep = now + timedelta(minutes=1)
            if now < self.writer.healthy_since + timeout:
                return changed  # in the grace period after a start or a stall
            stale_workers = tx.session.scalars(
                select(WorkerRow).where(
                    col(WorkerRow.status) != WorkerStatus.OFFLINE.value,
                    col(WorkerRow.last_heartbeat) < now - timeout,
                )
            ).all()
            for worker in stale_workers:
                tx.worker_offline_reason(worker.id, "heartbeat_lost")
                worker.status = WorkerStatus.OFFLINE.value
                lose_worker_services(tx, worker.id, "worker_lost", now)
            culled = cull_idle(tx, now)
            overtime = stop_overtime_services(tx, now, self.settings.time_limit_unit_seconds)
            if culled or overtime or stale_workers:
                tx.wake(SERVICES_TOPIC, TASKS_TOPIC)
            lost: list[str] = []
            for task in active_rows(tx.session):
                if task.lease_expires_at is not None and task.lease_expires_at < now:
                    lose_task(tx, task, "lease expired: no heartbeat from its worker", now)
                    lost.append(task.id)
                    continue
                for worker in stale_workers:
                    if any(True for _ in held_by([task], worker.id)):
                        lose_node(tx, task, worker.id, f"worker {worker.id} stopped heartbeating", now)
                        lost.append(task.id)
                        if task.status not in ACTIVE:
                            break
            return lost + changed

        lost = await self.writer.run(op)
        if lost:
            log.warning("lost workers or expired reservations: %s", ", ".join(lost))
            self.bus.publish(TASKS_TOPIC, *(task_topic(t) for t in lost))
        return lost

    async def run_sweeper(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not stop.is_set():
            # The loop itself stalled (the process was stopped, the event loop blocked): nobody
            # could heartbeat meanwhile either.
            gap = loop.time() - last
            if gap > self.settings.sweep_interval + self.writer.stall_threshold:
                self.writer.mark_stall(f"the sweeper did not run for {gap:.1f}s")
            try:
                await self.sweep()
            except FetchmlError as exc:  # the database is down, full or busy: already logged
                log.warning("lease sweep failed: %s", exc.message)
            except Exception:
                log.exception("lease sweep failed")
            last = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.sweep_interval)

