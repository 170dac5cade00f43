"""Reservations: GPUs that are free now, held for one user's tasks until they expire.

``active`` (nothing of it used yet) -> ``claimed`` (a task carrying its id was placed on it)
-> ``expired`` (its lifetime ran out; the sweeper returns the GPUs to everyone). Claimed
reservations keep holding their GPUs until expiry, so the owner can run task after task in
them. Creation is admin-only (the route says so) and audited, as are claims and expiry.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import AuditEventType, ReservationStatus
from fetchml.core.errors import ConflictError, ForbiddenError, ValidationError
from fetchml.core.models import CreateReservationRequest, Reservation
from fetchml.services.base import read
from fetchml.services.capacity import HELD_RESERVATION, cluster_state, holds_capacity
from fetchml.services.principal import Principal
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import ReservationRow


def reservation_to_wire(row: ReservationRow, now: datetime | None = None) -> Reservation:
    status = row.status
    if now is not None and status in HELD_RESERVATION and row.expires_at <= now:
        # the sweeper has not got to it yet; it holds nothing any more
        status = ReservationStatus.EXPIRED.value
    return Reservation(
        id=row.id,
        user_id=row.user_id,
        gpu_count=row.gpu_count,
        gpu_type=row.gpu_type,
        node_count=row.node_count,
        expires_at=row.expires_at,
        status=status,
        created_at=row.created_at,
        gpus={k: list(v) for k, v in (row.gpus or {}).items()},
    )


def check_task_reservation(tx: Tx, principal: Principal, reservation_id: str) -> None:
    """A task may carry a reservation id only if the reservation holds capacity now and the
    submitter owns it (or is an admin)."""
    row = tx.session.get(ReservationRow, reservation_id)
    if row is None:
        raise ValidationError(f"Reservation {reservation_id} does not exist")
    if row.status not in HELD_RESERVATION or row.expires_at <= tx.clock.now():
        raise ValidationError(f"Reservation {reservation_id} has expired")
    if not principal.is_admin and row.user_id != principal.user_id:
        raise ForbiddenError(f"Reservation {reservation_id} belongs to another user")


def expire_reservations(tx: Tx, now: datetime) -> list[str]:
    rows = tx.session.scalars(
        select(ReservationRow).where(
            col(ReservationRow.status).in_(HELD_RESERVATION), col(ReservationRow.expires_at) <= now
        )
    ).all()
    for row in rows:
        previous = row.status
        row.status = ReservationStatus.EXPIRED.value
        tx.audit(
            AuditEventType.RESERVATION_EXPIRED,
            user_id=row.user_id,
            resource=f"reservation:{row.id}",
            action="expire",
            metadata={"previous_status": previous, "gpus": row.gpus},
        )
    return [r.id for r in rows]


class ReservationService:
    def __init__(self, db: Database, writer: WriteQueue) -> None:
        self.db = db
        self.writer = writer

    async def create(
        self, principal: Principal, req: CreateReservationRequest, ip_address: str | None = None
    ) -> Reservation:
        def op(tx: Tx) -> Reservation:
            now = tx.clock.now()
            state = cluster_state(tx.session, now)
            reserved: dict[str, set[int]] = {}
            for hold in state.holds:
                for wid, idx in hold.gpus.items():
                    reserved.setdefault(wid, set()).update(idx)
            want_type = req.gpu_type.lower() if req.gpu_type else None
            fits: list[tuple[int, str, list[int]]] = []
            for w in state.free:
                if not w.active or (want_type and (w.gpu_type or "").lower() != want_type):
                    continue
                free = [g for g in w.free_gpus if g not in reserved.get(w.id, set())]
                if len(free) >= req.gpu_count:
                    fits.append((len(free), w.id, free))
            if len(fits) < req.node_count:
                kind = f" of type {req.gpu_type}" if req.gpu_type else ""
                raise ConflictError(
                    f"Not enough free capacity: needs {req.node_count} worker(s) with "
                    f"{req.gpu_count} free GPU(s){kind} each; {len(fits)} have that now"
                )
            fits.sort()  # best fit: keep the emptiest workers for bigger requests
            gpus = {wid: free[: req.gpu_count] for _, wid, free in fits[: req.node_count]}
            row = ReservationRow(
                id=f"r-{secrets.token_hex(6)}",
                user_id=principal.user_id,
                gpu_count=req.gpu_count,
                gpu_type=req.gpu_type,
                node_count=req.node_count,
                status=ReservationStatus.ACTIVE.value,
                created_at=now,
                expires_at=now + timedelta(minutes=req.expires_minutes),
                gpus=gpus,
            )
            tx.session.add(row)
            tx.audit(
                AuditEventType.RESERVATION_CREATED,
                user_id=principal.user_id,
                resource=f"reservation:{row.id}",
                action="create",
                ip_address=ip_address,
                metadata={
                    "gpu_count": req.gpu_count,
                    "gpu_type": req.gpu_type,
                    "node_count": req.node_count,
                    "expires_minutes": req.expires_minutes,
                    "gpus": gpus,
                },
            )
            return reservation_to_wire(row)

        return await self.writer.run(op)

    async def list(self, *, include_expired: bool = False) -> list[Reservation]:
        def q(session: Session) -> list[Reservation]:
            now = self.writer.clock.now()
            stmt = select(ReservationRow).order_by(col(ReservationRow.created_at))
            if not include_expired:
                stmt = stmt.where(holds_capacity(now))
            return [reservation_to_wire(r, now) for r in session.scalars(stmt).all()]

        return await read(self.db, q)
