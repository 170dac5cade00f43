"""Claims and status reports: how work reaches a worker and how it says what became of it.

A claim first hands over what an earlier pass placed on the worker; with nothing there it runs
a scheduling pass for the whole cluster (services/placement) under the write lock, so two claims
can never take the same task or the same GPU, even from two server processes. A long-polling
claim waits on the bus for capacity or work to appear.

A claim may carry the last report of an attempt that just ended on the same worker: it is
applied first, in the claim's transaction, so the freed slot takes the next task in the same
write (one request and one commit per task fewer, and the next task starts a round trip sooner).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlmodel import col

from fetchml.core.enums import TaskStatus, WorkerStatus
from fetchml.core.errors import NotFoundError
from fetchml.core.models import Task
from fetchml.core.nodes import master_port
from fetchml.core.plugins import task_env
from fetchml.core.protocol import Assignment, EndedAttempt, StatusReport, WorkerCapabilities
from fetchml.events.bus import SAFETY_RECHECK, TASKS_TOPIC, EventBus, task_topic
from fetchml.host.settings import Settings
from fetchml.services.attempts import apply_report, find_node
from fetchml.services.node_assignments import active_rows, held_by, nodes_of, set_nodes
from fetchml.services.placement import Placer
from fetchml.services.plugins import enabled_plugins
from fetchml.services.principal import Principal
from fetchml.services.tasks import task_to_wire
from fetchml.services.timelimits import limit_seconds
from fetchml.services.worker_auth import check_owned_worker, owned_worker
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.tables import TaskRow, WorkerRow

# Built once, as every statement on the claim and report path (see services/capacity._HELD).
_TASK_BY_ID = select(TaskRow).where(col(TaskRow.id) == bindparam("id"))

# A claim's outcome: the assignment, the other workers its pass placed work on, and the start
# latency of the report that went with it (an end that said `started`), else None.
_Claimed = tuple[Assignment | None, set[str], float | None]


class ClaimService:
    def __init__(self, writer: WriteQueue, bus: EventBus, settings: Settings, placer: Placer) -> None:
        self.writer = writer
        self.bus = bus
        self.settings = settings
        self.placer = placer
        # Called, after the commit, with the seconds from submission to the first start of a task
        # (the server's submit -> running histogram; plain numbers, no metrics library here).
        self.start_latency_observers: list[Callable[[float], None]] = []

    # -- claims -------------------------------------------------------------------------------

    def _claim_op(
        self, principal: Principal, worker_id: str
    ) -> Callable[[Tx], tuple[Assignment | None, set[str]]]:
        lease = timedelta(seconds=self.settings.heartbeat_timeout)
        unit = self.settings.time_limit_unit_seconds

        def deliver(tx: Tx, worker: WorkerRow, now: datetime, active: list[TaskRow]) -> Assignment | None:
            waiting = [(t, n) for t, n in held_by(active, worker.id) if not n.slot_assigned]
            # Several placed in one pass go out in queue order.
            waiting.sort(key=lambda tn: (-tn[0].priority, tn[0].seq or 0))
            for task, node in waiting:
                nodes = nodes_of(task)
                mine = nodes[node.node_id]
                mine.claim()
                set_nodes(task, nodes)
                task.lease_expires_at = now + lease
                master_addr: str | None = None
                if task.node_count > 1:
                    head = tx.session.get(WorkerRow, nodes[0].worker_id)
                    caps = WorkerCapabilities.model_validate(head.capabilities) if head else None
                    master_addr = (caps.hostname if caps else None) or nodes[0].worker_id
                return Assignment(
                    # The worker downloads the datasets: it gets the sources as submitted.
                    task=task_to_wire(task, real_sources=True),
                    attempt=task.attempt,
                    gpus=list(mine.gpus),
                    node_rank=mine.node_id,
                    num_nodes=task.node_count,
                    master_addr=master_addr,
                    master_port=master_port(task.seq) if task.node_count > 1 else None,
                    lease_expires_at=now + lease,
                    time_limit_seconds=limit_seconds(task.time_limit_minutes, unit),
                    env=task_env(task.id, task.plugin_configs or {}, enabled_plugins(tx.session))
                    if task.plugin_configs
                    else {},
                )
            return None

        def op(tx: Tx) -> tuple[Assignment | None, set[str]]:
            now = tx.clock.now()
            worker = owned_worker(tx, principal, worker_id)
            if worker.status != WorkerStatus.ACTIVE.value:
                return None, set()
            try:
                # Read once: the pass below counts the same tasks, and what it places is all
                # that becomes active in between.
                active = active_rows(tx.session)
                got = deliver(tx, worker, now, active)
                if got is not None:
                    return got, set()
                # Nothing placed here yet: decide for the whole cluster (placements for other
                # workers wait for their own claims), then look again.
                touched, placed = self.placer.schedule(tx, now, worker_id, active)
                if touched - {worker_id}:
                    tx.wake(TASKS_TOPIC)  # the workers that got work in this pass, on every server
                mine = deliver(tx, worker, now, active + placed) if worker_id in touched else None
                return mine, touched - {worker_id}
            finally:
                # Set after the reads, so it goes out with the claim's own changes rather than in
                # an autoflush of its own before the first of them.
                worker.last_heartbeat = now

        return op

    async def claim(
        self, principal: Principal, worker_id: str, wait: float, ended: EndedAttempt | None = None
    ) -> Assignment | None:
        """`ended`: an attempt's last report, applied first in the same transaction; if it is
        refused (404, 403, 409) nothing is claimed either."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait, self.settings.claim_wait))
        claim_op = self._claim_op(principal, worker_id)

        def plain(tx: Tx) -> _Claimed:
            return (*claim_op(tx), None)

        op = plain if ended is None else self._report_then(principal, ended, claim_op)
        while True:
            wake = self.bus.listen(TASKS_TOPIC)
            try:
                assignment, others, started = await self.writer.run(op)
            except BaseException:
                wake.cancel()  # a 403/404 must not leave a waiter behind
                raise
            if ended is not None:
                self._reported(ended.task_id, ended, started)
                op, ended = plain, None
            if others:
                self.bus.publish(TASKS_TOPIC)  # wake the workers that got work in this pass
            if assignment is not None:
                wake.cancel()
                self.bus.publish(task_topic(assignment.task.id))
                return assignment
            remaining = deadline - loop.time()
            if remaining <= 0:
                wake.cancel()
                return None
            # Other servers' commits wake us through the feed; the timer only covers a lost wake-up.
            await self.bus.wait(wake, min(remaining, SAFETY_RECHECK))

    def _report_then(
        self,
        principal: Principal,
        ended: EndedAttempt,
        claim_op: Callable[[Tx], tuple[Assignment | None, set[str]]],
    ) -> Callable[[Tx], _Claimed]:
        report_op = self._report_op(principal, ended.task_id, ended)

        def op(tx: Tx) -> _Claimed:
            # Raises for a refused report: the claim is not made either.
            _, started = report_op(tx)
            return (*claim_op(tx), started)

        return op

    # -- reports ------------------------------------------------------------------------------

    async def report(self, principal: Principal, task_id: str, rep: StatusReport) -> Task:
        result, started = await self.writer.run(self._report_op(principal, task_id, rep))
        self._reported(task_id, rep, started)
        return result

    def _reported(self, task_id: str, rep: StatusReport, started: float | None) -> None:
        """After the commit of a report."""
        if started is not None:
            for observe in self.start_latency_observers:
                observe(started)
        self.bus.publish(task_topic(task_id))
        if rep.status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            self.bus.publish(TASKS_TOPIC)  # capacity came free

    def _report_op(
        self, principal: Principal, task_id: str, rep: StatusReport
    ) -> Callable[[Tx], tuple[Task, float | None]]:
        lease = timedelta(seconds=self.settings.heartbeat_timeout)

        def op(tx: Tx) -> tuple[Task, float | None]:
            now = tx.clock.now()
            task = tx.session.scalars(_TASK_BY_ID, {"id": task_id}).first()
            if task is None:
                raise NotFoundError(f"Task {task_id} not found")
            nodes, node = find_node(task, rep)
            check_owned_worker(tx, principal, node.worker_id)
            was_started = task.started_at is not None
            apply_report(tx, task, nodes, node, rep, now, lease)
            started: float | None = None
            # The first attempt only: a retry's start measured from the submission would count
            # the failed attempts' run time as waiting.
            if not was_started and task.started_at is not None and task.retry_count == 0:
                started = max(0.0, (task.started_at - task.created_at).total_seconds())
            return task_to_wire(task), started

        return op
