"""Jupyter services: the API (start, list, get, stop, proxy target), `JupyterServices`.

Services wait in their own queue for a worker's service slot, hold GPUs, CPUs and memory like
tasks (fetchml.services.placement counts them in every worker's free capacity), and are placed
by the same pure decision as tasks (services/jupyter_placement.py), so reservations and drain
apply to them as well. The worker protocol's service half (claim starts and stops, report state)
and what the sweep and the worker registry do to a worker's services (`cull_idle`,
`stop_overtime_services`, `lose_worker_services`) are in services/jupyter_worker.py; a service's
states, wire form and end in services/jupyter_rows.py. Their names are re-exported here.
"""

from __future__ import annotations

import secrets
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import AuditEventType, Role
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError
from fetchml.core.jupyter import JupyterService, StartJupyterRequest
from fetchml.events.bus import SERVICES_TOPIC, TASKS_TOPIC, EventBus
from fetchml.host.settings import Settings
from fetchml.services.base import read
from fetchml.services.capacity import cluster_state
from fetchml.services.jupyter_placement import pending_reasons, service_workers
from fetchml.services.jupyter_rows import (
    ERROR,
    ON_WORKER,
    QUEUED,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    UNFINISHED,
    Ids,
    Rows,
    end_service,
    to_wire,
)
from fetchml.services.jupyter_worker import (
    ServiceWorkerProtocol,
    cull_idle,
    holds_services,
    lose_worker_services,
    stop_overtime_services,
    unplace_services,
)
from fetchml.services.placement import Placer
from fetchml.services.principal import Principal
from fetchml.services.timelimits import effective_limit
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import JupyterServiceRow

# Every public name the module had before the split: importers (leases, workers, tests) keep
# naming them from here.
__all__ = [
    "ERROR",
    "ON_WORKER",
    "QUEUED",
    "RUNNING",
    "STARTING",
    "STOPPED",
    "STOPPING",
    "UNFINISHED",
    "Ids",
    "JupyterServices",
    "Rows",
    "cull_idle",
    "holds_services",
    "lose_worker_services",
    "stop_overtime_services",
    "to_wire",
    "unplace_services",
]


class JupyterServices(ServiceWorkerProtocol):
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
            return to_wire(row, pending_reasons(tx.session, now, [row]).get(row.id))

        out = await self.writer.run(op)
        self.bus.publish(SERVICES_TOPIC)
        return out

    async def list(self, principal: Principal) -> list[JupyterService]:
        def q(session: Session) -> list[JupyterService]:
            stmt = select(JupyterServiceRow).order_by(col(JupyterServiceRow.seq).desc())
            if principal.role is not Role.ADMIN:
                stmt = stmt.where(col(JupyterServiceRow.user_id) == principal.user_id)
            rows = list(session.scalars(stmt.limit(1000)).all())
            reasons = pending_reasons(session, self.writer.clock.now(), rows)
            return [to_wire(r, reasons.get(r.id)) for r in rows]

        return await read(self.db, q)

    async def get(self, principal: Principal, service_id: str) -> JupyterService:
        def q(session: Session) -> JupyterService:
            row = self._visible(session, principal, service_id)
            return to_wire(row, pending_reasons(session, self.writer.clock.now(), [row]).get(row.id))

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
                end_service(tx, row, STOPPED, now, reason="stop", actor=principal.user_id, action="stop")
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
            free = sum(w.batch_available for w in service_workers(state) if w.active)
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
