"""Jupyter services: the API (start, list, get, stop, proxy target) and the worker protocol's
service half (claim starts and stops, report state).

Services wait in their own queue for a worker's service slot, hold GPUs, CPUs and memory like
tasks (fetchml.services.placement counts them in every worker's free capacity), and are placed
by the same pure decision as tasks (`fetchml.core.scheduling.decide`, with the service slots in
place of the batch slots), so reservations and drain apply to them as well. Liveness follows the
worker: a worker declared lost, or one that registers again, turns its services to `error`
(`lose_worker_services`, called by fetchml.services.workers); the sweep also stops services idle
past their timeout (`cull_idle`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import AuditEventType, Role, WorkerStatus
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from fetchml.core.jupyter import (
    MAX_LOG_TAIL,
    JupyterService,
    JupyterStatus,
    ServiceAssignment,
    ServiceClaimResponse,
    ServiceReport,
    StartJupyterRequest,
    proxy_path,
)
from fetchml.core.scheduling import TaskReq, decide
from fetchml.core.settings import Settings
from fetchml.events.bus import SAFETY_RECHECK, SERVICES_TOPIC, TASKS_TOPIC, EventBus
from fetchml.services.base import read
from fetchml.services.capacity import SERVICE_HOLDING, ClusterState, cluster_state
from fetchml.services.placement import Placer
from fetchml.services.principal import Principal
from fetchml.services.timelimits import TIME_LIMIT_STOP, effective_limit
from fetchml.services.worker_auth import owned_worker
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import JupyterServiceRow

QUEUED = "queued"  # stored only: no worker yet (the wire says `starting` + pending_reason)
STARTING = JupyterStatus.STARTING.value
RUNNING = JupyterStatus.RUNNING.value
STOPPING = JupyterStatus.STOPPING.value
STOPPED = JupyterStatus.STOPPED.value
ERROR = JupyterStatus.ERROR.value
UNFINISHED = (QUEUED, STARTING, RUNNING, STOPPING)
ON_WORKER = SERVICE_HOLDING  # placed on a worker: what it holds counts there
# (the class below has a method named `list`)
Rows = list[JupyterServiceRow]
Ids = list[str]


def to_wire(row: JupyterServiceRow, pending_reason: str | None = None) -> JupyterService:
    status = STARTING if row.status == QUEUED else row.status
    return JupyterService(
        id=row.id,
        name=row.name,
        status=JupyterStatus(status),
        url=row.url if row.status == RUNNING else None,
        token=row.token if row.status in UNFINISHED else None,
        created_at=row.created_at,
        user_id=row.user_id,
        workspace=row.workspace,
        image=row.image,
        gpu=row.gpu,
        gpu_type=row.gpu_type,
        cpu=row.cpu,
        memory_gb=row.memory_gb,
        idle_timeout_minutes=row.idle_timeout_minutes,
        time_limit_minutes=row.time_limit_minutes,
        worker_id=row.worker_id,
        gpus=list(row.gpus or []),
        pending_reason=pending_reason if row.status == QUEUED else None,
        error=row.error,
        log_tail=list(row.log_tail or []),
        proxy_path=proxy_path(row.id),
        last_activity=row.last_activity,
        started_at=row.started_at,
        ended_at=row.ended_at,
        stop_reason=row.stop_reason,
    )


def _end(
    tx: Tx,
    row: JupyterServiceRow,
    status: str,
    now: datetime,
    *,
    reason: str,
    error: str | None = None,
    log_tail: list[str] | None = None,
    actor: str | None = None,
    action: str | None = None,
) -> None:
    """Ends a service (stopped or error) and audits it. The token is never audited."""
    row.status = status
    row.ended_at = now
    row.stop_reason = row.stop_reason or reason
    if error is not None:
        row.error = error
    if log_tail:
        row.log_tail = log_tail[-MAX_LOG_TAIL:]
    failed = status == ERROR
    tx.audit(
        AuditEventType.JUPYTER_FAILED if failed else AuditEventType.JUPYTER_STOPPED,
        user_id=actor or row.user_id,
        resource=f"jupyter:{row.id}",
        action=action or _END_ACTIONS.get(reason, reason),
        success=not failed,
        error=error if failed else None,
        metadata={"name": row.name, "owner": row.user_id, "worker_id": row.worker_id},
    )


# The audit action of an end, by its reason: a stop asked for (by a user, the idle cull or the
# time limit) was audited when asked; its end is "stopped".
_END_ACTIONS = {"crashed": "error", "stop": "stopped", "idle_stop": "stopped", "time_limit": "stopped"}


def lose_worker_services(tx: Tx, worker_id: str, reason: str, now: datetime) -> list[str]:
    """A worker was declared lost (`worker_lost`) or registered again (`worker_restarted`):
    what it ran is gone, so its services end in `error`, never a ghost `running`. Services
    placed on it but not yet delivered go back to the queue."""
    rows = tx.session.scalars(
        select(JupyterServiceRow).where(
            col(JupyterServiceRow.worker_id) == worker_id, col(JupyterServiceRow.status).in_(ON_WORKER)
        )
    ).all()
    changed: list[str] = []
    for row in rows:
        if row.status == STARTING and not row.delivered:
            _unplace(row)
        elif row.status == STOPPING:
            _end(tx, row, STOPPED, now, reason=row.stop_reason or "stop")
        else:
            words = "was lost (no heartbeat)" if reason == "worker_lost" else "restarted"
            _end(tx, row, ERROR, now, reason=reason, error=f"worker {worker_id} {words}")
        changed.append(row.id)
    return changed


def holds_services(session: Session, worker_id: str) -> bool:
    return (
        session.scalars(
            select(col(JupyterServiceRow.id))
            .where(
                col(JupyterServiceRow.worker_id) == worker_id, col(JupyterServiceRow.status).in_(ON_WORKER)
            )
            .limit(1)
        ).first()
        is not None
    )


def unplace_services(tx: Tx, worker_id: str) -> list[str]:
    """A draining worker: services placed on it but not yet delivered go back to the queue."""
    rows = tx.session.scalars(
        select(JupyterServiceRow).where(
            col(JupyterServiceRow.worker_id) == worker_id,
            col(JupyterServiceRow.status) == STARTING,
            col(JupyterServiceRow.delivered).is_(False),
        )
    ).all()
    for row in rows:
        _unplace(row)
    return [r.id for r in rows]


def _unplace(row: JupyterServiceRow) -> None:
    row.status = QUEUED
    row.worker_id = None
    row.gpus = []


def _system_stop(tx: Tx, row: JupyterServiceRow, reason: str, metadata: dict[str, object]) -> None:
    """The server itself asks a running service to stop (idle, past its time limit): its worker
    stops it at its next service claim. Audited as user `system`."""
    row.status = STOPPING
    row.stop_reason = reason
    tx.audit(
        AuditEventType.JUPYTER_STOPPED,
        user_id="system",
        resource=f"jupyter:{row.id}",
        action=reason,
        metadata={"name": row.name, "owner": row.user_id, **metadata},
    )


def cull_idle(tx: Tx, now: datetime) -> list[str]:
    """Running services idle past their timeout are asked to stop (the sweep calls this)."""
    rows = tx.session.scalars(
        select(JupyterServiceRow).where(
            col(JupyterServiceRow.status) == RUNNING, col(JupyterServiceRow.idle_timeout_minutes) > 0
        )
    ).all()
    culled: list[str] = []
    for row in rows:
        since = row.last_activity or row.started_at or row.created_at
        if since + timedelta(minutes=row.idle_timeout_minutes) <= now:
            meta = {"idle_timeout_minutes": row.idle_timeout_minutes, "last_activity": since.isoformat()}
            _system_stop(tx, row, "idle_stop", meta)
            culled.append(row.id)
    return culled


def stop_overtime_services(tx: Tx, now: datetime, unit_seconds: float) -> list[str]:
    """Running services past their time limit are asked to stop (the sweep calls this)."""
    rows = tx.session.scalars(
        select(JupyterServiceRow).where(
            col(JupyterServiceRow.status) == RUNNING, col(JupyterServiceRow.time_limit_minutes).is_not(None)
        )
    ).all()
    stopped: list[str] = []
    for row in rows:
        assert row.time_limit_minutes is not None
        since = row.started_at or row.created_at
        if since + timedelta(seconds=row.time_limit_minutes * unit_seconds) <= now:
            meta = {"time_limit_minutes": row.time_limit_minutes, "started_at": since.isoformat()}
            _system_stop(tx, row, TIME_LIMIT_STOP, meta)
            stopped.append(row.id)
    return stopped


def _check_reported_url(url: str, service_id: str) -> None:
    """The address the server's proxy will request: http(s), and only the service's own base
    path there, so a bad report cannot aim the server at other paths of the hosts it reaches
    (a metadata endpoint, an admin page on loopback). Refused before anything is stored."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path.rstrip("/") != proxy_path(service_id).rstrip("/")
    ):
        raise ValidationError("url: must be http(s)://HOST:PORT followed by the service's base_url")


def _service_workers(state: ClusterState) -> list[Any]:
    """The cluster as the service queue sees it: service slots in place of batch slots."""
    out = []
    for w in state.free:
        row = state.workers[w.id]
        total = row.service_total
        out.append(
            dataclasses.replace(
                w,
                batch_available=max(0, total - state.services_used.get(w.id, 0)),
                batch_total=total,
            )
        )
    return out


def _reqs(rows: list[JupyterServiceRow]) -> list[TaskReq]:
    return [
        TaskReq(
            id=r.id,
            seq=r.seq or 0,
            priority=5,
            created_at=r.created_at.timestamp(),
            cpu=r.cpu,
            memory_gb=r.memory_gb,
            gpu=r.gpu,
            gpu_type=r.gpu_type,
            user_id=r.user_id,
        )
        for r in rows
    ]


def _queued(session: Session) -> list[JupyterServiceRow]:
    return list(
        session.scalars(
            select(JupyterServiceRow)
            .where(col(JupyterServiceRow.status) == QUEUED)
            .order_by(col(JupyterServiceRow.seq))
        ).all()
    )


def _service_reason(text: str) -> str:
    return text.replace("batch slot", "service slot")


class JupyterServices:
    def __init__(
        self, db: Database, writer: WriteQueue, bus: EventBus, settings: Settings, placer: Placer
    ) -> None:
        self.db = db
        self.writer = writer
        self.bus = bus
        self.settings = settings
        self.placer = placer

    # -- the API ------------------------------------------------------------------------------

    async def create(
        self, principal: Principal, req: StartJupyterRequest, ip_address: str | None = None
    ) -> JupyterService:
        if principal.role is Role.WORKER:
            raise ForbiddenError("Worker keys cannot start Jupyter services")
        idle = (
            req.idle_timeout_minutes
            if req.idle_timeout_minutes is not None
            else self.settings.jupyter_idle_timeout_minutes
        )
        limit = self.settings.jupyter_max_services_per_user
        # No server default here: a service's idle timeout already bounds what it holds unused.
        time_limit = effective_limit(req.time_limit_minutes, None, self.settings.max_time_limit_minutes)

        def op(tx: Tx) -> JupyterService:
            now = tx.clock.now()
            mine = tx.session.scalars(
                select(JupyterServiceRow).where(
                    col(JupyterServiceRow.user_id) == principal.user_id,
                    col(JupyterServiceRow.status).in_(UNFINISHED),
                )
            ).all()
            if any(r.name == req.name for r in mine):
                raise ConflictError(f"You already have a Jupyter service named {req.name!r}; stop it first")
            if len(mine) >= limit:
                raise ConflictError(
                    f"You already have {len(mine)} unfinished Jupyter services (the limit is {limit}); stop one first"
                )
            row = JupyterServiceRow(
                id=uuid.uuid4().hex,
                name=req.name,
                user_id=principal.user_id,
                workspace=req.workspace or req.name,
                image=req.image,
                gpu=req.gpu,
                gpu_type=req.gpu_type if req.gpu else None,
                cpu=req.cpu,
                memory_gb=req.memory_gb,
                idle_timeout_minutes=idle,
                time_limit_minutes=time_limit,
                status=QUEUED,
                token=secrets.token_urlsafe(32),
                created_at=now,
            )
            tx.session.add(row)
            tx.audit(
                AuditEventType.JUPYTER_STARTED,
                user_id=principal.user_id,
                resource=f"jupyter:{row.id}",
                action="start",
                ip_address=ip_address,
                metadata={
                    "name": row.name,
                    "workspace": row.workspace,
                    "image": row.image,
                    "gpu": row.gpu,
                    "gpu_type": row.gpu_type,
                    "cpu": row.cpu,
                    "memory_gb": row.memory_gb,
                    "idle_timeout_minutes": row.idle_timeout_minutes,
                    **({"time_limit_minutes": time_limit} if time_limit is not None else {}),
                },
            )
            tx.wake(SERVICES_TOPIC)
            tx.session.flush()
            return to_wire(row, self._reasons(tx.session, now, [row]).get(row.id))

        out = await self.writer.run(op)
        self.bus.publish(SERVICES_TOPIC)
        return out

    async def list(self, principal: Principal) -> list[JupyterService]:
        def q(session: Session) -> list[JupyterService]:
            stmt = select(JupyterServiceRow).order_by(col(JupyterServiceRow.seq).desc())
            if principal.role is not Role.ADMIN:
                stmt = stmt.where(col(JupyterServiceRow.user_id) == principal.user_id)
            rows = list(session.scalars(stmt.limit(1000)).all())
            reasons = self._reasons(session, self.writer.clock.now(), rows)
            return [to_wire(r, reasons.get(r.id)) for r in rows]

        return await read(self.db, q)

    async def get(self, principal: Principal, service_id: str) -> JupyterService:
        def q(session: Session) -> JupyterService:
            row = self._visible(session, principal, service_id)
            return to_wire(row, self._reasons(session, self.writer.clock.now(), [row]).get(row.id))

        return await read(self.db, q)

    async def stop(self, principal: Principal, service_id: str, ip_address: str | None = None) -> None:
        """`stopping` until its worker reports it stopped; a queued one stops at once."""

        def op(tx: Tx) -> None:
            now = tx.clock.now()
            row = self._visible(tx.session, principal, service_id)
            if row.status in (STOPPED, ERROR):
                raise ConflictError(f"Jupyter service {service_id} has already ended ({row.status})")
            if row.status == STOPPING:
                return  # a repeated stop: already on its way
            if row.status == QUEUED or (row.status == STARTING and not row.delivered):
                row.worker_id = None
                row.gpus = []
                _end(tx, row, STOPPED, now, reason="stop", actor=principal.user_id, action="stop")
            else:
                row.status = STOPPING
                row.stop_reason = "stop"
                tx.audit(
                    AuditEventType.JUPYTER_STOPPED,
                    user_id=principal.user_id,
                    resource=f"jupyter:{row.id}",
                    action="stop",
                    ip_address=ip_address,
                    metadata={"name": row.name, "owner": row.user_id, "worker_id": row.worker_id},
                )
            tx.wake(SERVICES_TOPIC, TASKS_TOPIC)  # what it held may run a batch task now

        await self.writer.run(op)
        self.bus.publish(SERVICES_TOPIC, TASKS_TOPIC)

    async def proxy_target(self, principal: Principal, service_id: str) -> tuple[str, str]:
        """(the service's own URL, its token) for the server's proxy: owner and admins only,
        running services only."""

        def q(session: Session) -> tuple[str, str]:
            row = self._visible(session, principal, service_id)
            if row.status != RUNNING or not row.url:
                raise ConflictError(f"Jupyter service {service_id} is not running ({to_wire(row).status})")
            return row.url, row.token

        return await read(self.db, q)

    async def count_queued(self) -> tuple[int, int]:
        """(queued services, free service slots on active workers) for the scheduler status."""

        def q(session: Session) -> tuple[int, int]:
            queued = session.scalar(select(func.count()).where(col(JupyterServiceRow.status) == QUEUED))
            state = cluster_state(session, self.writer.clock.now())
            free = sum(w.batch_available for w in _service_workers(state) if w.active)
            return int(queued or 0), free

        return await read(self.db, q)

    def _visible(self, session: Session, principal: Principal, service_id: str) -> JupyterServiceRow:
        row = session.scalars(
            select(JupyterServiceRow).where(col(JupyterServiceRow.id) == service_id)
        ).first()
        if row is None:
            raise NotFoundError(f"Jupyter service {service_id} not found")
        if principal.role is not Role.ADMIN and row.user_id != principal.user_id:
            raise ForbiddenError("This Jupyter service belongs to another user")
        return row

    def _reasons(self, session: Session, now: datetime, rows: Rows) -> dict[str, str]:
        if not any(r.status == QUEUED for r in rows):
            return {}
        state = cluster_state(session, now)
        queue = _reqs(_queued(session))
        decision = decide(queue, _service_workers(state), state.holds, now=now.timestamp())
        wanted = {r.id for r in rows}
        out: dict[str, str] = {}
        for req in queue:
            if req.id in wanted:
                reason = decision.reason_for(req)
                out[req.id] = _service_reason(reason) if reason else "starting: a service slot is free for it"
        return out

    # -- the worker protocol ------------------------------------------------------------------

    def _claim_op(self, principal: Principal, worker_id: str, running: set[str], busy: set[str]) -> Any:
        def op(tx: Tx) -> ServiceClaimResponse:
            now = tx.clock.now()
            worker = owned_worker(tx, principal, worker_id)
            mine = tx.session.scalars(
                select(JupyterServiceRow).where(
                    col(JupyterServiceRow.worker_id) == worker_id,
                    col(JupyterServiceRow.status).in_(ON_WORKER),
                )
            ).all()
            live = {r.id for r in mine if r.delivered}
            # Asked to stop, or no longer this worker's (ended, lost, or never its own).
            stop = sorted(
                ((running - live) | {r.id for r in mine if r.status == STOPPING and r.id in running}) - busy
            )
            if worker.status == WorkerStatus.ACTIVE.value:
                worker.last_heartbeat = now
                self._place(tx, worker_id, now)
            start: list[ServiceAssignment] = []
            for row in tx.session.scalars(
                select(JupyterServiceRow)
                .where(
                    col(JupyterServiceRow.worker_id) == worker_id,
                    col(JupyterServiceRow.status) == STARTING,
                    col(JupyterServiceRow.delivered).is_(False),
                )
                .order_by(col(JupyterServiceRow.seq))
            ).all():
                if worker.status != WorkerStatus.ACTIVE.value:
                    break
                row.delivered = True
                start.append(
                    ServiceAssignment(
                        id=row.id,
                        name=row.name,
                        user_id=row.user_id,
                        workspace=row.workspace,
                        image=row.image,
                        gpus=list(row.gpus or []),
                        cpu=row.cpu,
                        memory_gb=row.memory_gb,
                        token=row.token,
                        base_url=proxy_path(row.id),
                    )
                )
            return ServiceClaimResponse(start=start, stop=stop)

        return op

    def _place(self, tx: Tx, worker_id: str, now: datetime) -> None:
        """Places queued services on the claiming worker (others get theirs when they ask)."""
        queued = _queued(tx.session)
        if not queued:
            return
        state = cluster_state(tx.session, now)
        workers = _service_workers(state)
        me = next((w for w in workers if w.id == worker_id), None)
        if me is None or not me.active or me.batch_available <= 0:
            return
        decision = decide(_reqs(queued), workers, state.holds, now=now.timestamp(), prefer=worker_id)
        by_id = {r.id: r for r in queued}
        for p in decision.assignments:
            node = p.nodes[0]
            if node.worker_id != worker_id:
                continue
            row = by_id[p.task_id]
            row.status = STARTING
            row.worker_id = worker_id
            row.gpus = list(node.gpus)
            row.delivered = False
        self.placer.invalidate()  # the GPUs it took are gone for batch tasks too

    async def claim(
        self, principal: Principal, worker_id: str, running: Ids, wait: float, stopping: Ids | None = None
    ) -> ServiceClaimResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait, self.settings.claim_wait))
        have = set(running)
        busy = set(stopping or ())
        while True:
            wake = self.bus.listen(SERVICES_TOPIC)
            try:
                out: ServiceClaimResponse = await self.writer.run(
                    self._claim_op(principal, worker_id, have, busy)
                )
            except BaseException:
                wake.cancel()
                raise
            remaining = deadline - loop.time()
            if out.start or out.stop or remaining <= 0:
                wake.cancel()
                if out.start:
                    self.bus.publish(SERVICES_TOPIC)  # capacity was taken: batch claims re-decide
                return out
            await self.bus.wait(wake, min(remaining, SAFETY_RECHECK))

    async def report(
        self, principal: Principal, worker_id: str, service_id: str, rep: ServiceReport
    ) -> JupyterService:
        def op(tx: Tx) -> tuple[JupyterService, bool]:
            now = tx.clock.now()
            owned_worker(tx, principal, worker_id)
            row = tx.session.scalars(
                select(JupyterServiceRow).where(col(JupyterServiceRow.id) == service_id)
            ).first()
            if row is None:
                raise NotFoundError(f"Jupyter service {service_id} not found")
            if row.worker_id != worker_id:
                raise ForbiddenError(f"Jupyter service {service_id} is not held by worker {worker_id}")
            if row.status not in ON_WORKER or not row.delivered:
                raise ConflictError(f"Jupyter service {service_id} is no longer live here ({row.status})")
            changed = False
            if rep.status == "running":
                if row.status == STARTING:
                    if not rep.url:
                        raise ConflictError("The first running report must carry the service's url")
                    _check_reported_url(rep.url, row.id)
                    row.status = RUNNING
                    row.url = rep.url
                    row.started_at = now
                    row.last_activity = rep.last_activity or now
                    changed = True
                elif rep.last_activity is not None:
                    # Jupyter's clock is the worker's; never move activity into the future.
                    row.last_activity = min(
                        max(rep.last_activity, row.last_activity or rep.last_activity), now
                    )
            elif rep.status == "stopped":
                reason = row.stop_reason or ("stop" if row.status == STOPPING else "worker_stopped")
                _end(
                    tx,
                    row,
                    STOPPED,
                    now,
                    reason=reason,
                    error=rep.error if reason == "worker_stopped" else None,
                )
                changed = True
            else:
                if row.status == STOPPING:
                    # It failed while being stopped: stopped is what was asked for.
                    _end(tx, row, STOPPED, now, reason=row.stop_reason or "stop", log_tail=rep.log_tail)
                else:
                    _end(
                        tx,
                        row,
                        ERROR,
                        now,
                        reason="crashed",
                        error=rep.error or "the Jupyter server exited",
                        log_tail=rep.log_tail,
                    )
                changed = True
            if changed:
                tx.wake(SERVICES_TOPIC, TASKS_TOPIC)
            return to_wire(row), changed

        out, changed = await self.writer.run(op)
        if changed:
            self.bus.publish(SERVICES_TOPIC, TASKS_TOPIC)
        return out
