"""The service queue's scheduling: services are placed by the same pure decision as tasks
(`fetchml.core.scheduling.decide`) over the cluster with each worker's service slots in place of
its batch slots, so reservations and drain apply to them as well. A worker takes its services
when it claims (`place_services`); a queued one's pending reason comes from the same decision."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.scheduling import TaskReq, WorkerFree, decide
from fetchml.services.capacity import ClusterState, cluster_state
from fetchml.services.jupyter_rows import QUEUED, STARTING, Rows
from fetchml.services.placement import Placer
from fetchml.services.write_queue import Tx
from fetchml.store.tables import JupyterServiceRow


def service_workers(state: ClusterState) -> list[WorkerFree]:
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


def pending_reasons(session: Session, now: datetime, rows: Rows) -> dict[str, str]:
    """The pending reason of each queued service among `rows` (none for the others)."""
    if not any(r.status == QUEUED for r in rows):
        return {}
    state = cluster_state(session, now)
    queue = _reqs(_queued(session))
    decision = decide(queue, service_workers(state), state.holds, now=now.timestamp())
    wanted = {r.id for r in rows}
    out: dict[str, str] = {}
    for req in queue:
        if req.id in wanted:
            reason = decision.reason_for(req)
            out[req.id] = _service_reason(reason) if reason else "starting: a service slot is free for it"
    return out


def place_services(tx: Tx, worker_id: str, now: datetime, placer: Placer) -> None:
    """Places queued services on the claiming worker (others get theirs when they ask)."""
    queued = _queued(tx.session)
    if not queued:
        return
    state = cluster_state(tx.session, now)
    workers = service_workers(state)
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
    placer.invalidate()  # the GPUs it took are gone for batch tasks too
