"""Jupyter services, the worker's side: the worker protocol's claims and reports
(`ServiceWorkerProtocol`), and what the sweep and the worker registry do to a worker's services:
stop the idle (`cull_idle`) and the overtime (`stop_overtime_services`), and end or requeue the
services of a worker declared lost, restarted or draining (`lose_worker_services`,
`unplace_services`, called by fetchml.services.workers)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import AuditEventType, WorkerStatus
from fetchml.core.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from fetchml.core.jupyter import (
    JupyterService,
    ServiceAssignment,
    ServiceClaimResponse,
    ServiceReport,
    proxy_path,
)
from fetchml.events.bus import SAFETY_RECHECK, SERVICES_TOPIC, TASKS_TOPIC, EventBus
from fetchml.host.settings import Settings
from fetchml.services.jupyter_placement import place_services
from fetchml.services.jupyter_rows import (
    ERROR,
    ON_WORKER,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    Ids,
    end_service,
    to_wire,
    unplace,
)
from fetchml.services.placement import Placer
from fetchml.services.principal import Principal
from fetchml.services.timelimits import TIME_LIMIT_STOP
from fetchml.services.worker_auth import owned_worker
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.tables import JupyterServiceRow


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
            unplace(row)
        elif row.status == STOPPING:
            end_service(tx, row, STOPPED, now, reason=row.stop_reason or "stop")
        else:
            words = "was lost (no heartbeat)" if reason == "worker_lost" else "restarted"
            end_service(tx, row, ERROR, now, reason=reason, error=f"worker {worker_id} {words}")
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
        unplace(row)
    return [r.id for r in rows]


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


class ServiceWorkerProtocol:
    """The worker protocol's service half: a worker claims the services to start and stop and
    reports their state. JupyterServices (services/jupyter.py) is built on it, so one object
    serves the API and the worker routes; it sets these attributes."""

    writer: WriteQueue
    bus: EventBus
    settings: Settings
    placer: Placer

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
                place_services(tx, worker_id, now, self.placer)
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
                end_service(
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
                    end_service(
                        tx, row, STOPPED, now, reason=row.stop_reason or "stop", log_tail=rep.log_tail
                    )
                else:
                    end_service(
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
