"""A Jupyter service's stored states, its wire form, and the two ways a placed one leaves its
worker: it ends (stopped or error, audited) or goes back to the queue. Shared by the API
(services/jupyter.py), the service queue's placement (services/jupyter_placement.py) and the
worker side (services/jupyter_worker.py)."""

from __future__ import annotations

from datetime import datetime

from fetchml.core.enums import AuditEventType
from fetchml.core.jupyter import MAX_LOG_TAIL, JupyterService, JupyterStatus, proxy_path
from fetchml.services.capacity import SERVICE_HOLDING
from fetchml.services.write_queue import Tx
from fetchml.store.tables import JupyterServiceRow

QUEUED = "queued"  # stored only: no worker yet (the wire says `starting` + pending_reason)
STARTING = JupyterStatus.STARTING.value
RUNNING = JupyterStatus.RUNNING.value
STOPPING = JupyterStatus.STOPPING.value
STOPPED = JupyterStatus.STOPPED.value
ERROR = JupyterStatus.ERROR.value
UNFINISHED = (QUEUED, STARTING, RUNNING, STOPPING)
ON_WORKER = SERVICE_HOLDING  # placed on a worker: what it holds counts there
# (JupyterServices has a method named `list`)
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


def end_service(
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


def unplace(row: JupyterServiceRow) -> None:
    """Back to the queue: no worker, no GPUs."""
    row.status = QUEUED
    row.worker_id = None
    row.gpus = []
