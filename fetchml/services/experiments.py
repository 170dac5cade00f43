from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.enums import AuditEventType, ExperimentStatus
from fetchml.core.errors import ConflictError
from fetchml.core.models import CreateExperimentRequest, Experiment
from fetchml.services.base import read
from fetchml.services.principal import Principal
from fetchml.services.write_queue import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import ExperimentRow


def experiment_to_wire(row: ExperimentRow) -> Experiment:
    return Experiment(
        id=row.id,
        name=row.name,
        description=row.description,
        commit_id=row.commit_id,
        created_at=row.created_at,
        status=ExperimentStatus(row.status),
        user_id=row.user_id,
    )


def create_experiment_op(
    principal: Principal, req: CreateExperimentRequest, ip_address: str | None
) -> Callable[[Tx], Experiment]:
    def op(tx: Tx) -> Experiment:
        # Safe without a unique-violation race: ops run under the database-wide write lock.
        if tx.session.scalars(
            select(col(ExperimentRow.id)).where(col(ExperimentRow.name) == req.name)
        ).first():
            raise ConflictError(f"An experiment named {req.name!r} already exists")
        row = ExperimentRow(
            id=uuid.uuid4().hex,
            name=req.name,
            description=req.description,
            commit_id=req.commit_id,
            status=ExperimentStatus.ACTIVE.value,
            user_id=principal.user_id,
            created_at=tx.clock.now(),
        )
        tx.session.add(row)
        tx.audit(
            AuditEventType.EXPERIMENT_CREATED,
            user_id=principal.user_id,
            resource=f"experiment:{row.id}",
            action="create",
            ip_address=ip_address,
            metadata={"name": row.name},
        )
        return experiment_to_wire(row)

    return op


class ExperimentService:
    def __init__(self, db: Database, writer: WriteQueue) -> None:
        self.db = db
        self.writer = writer

    async def create(
        self, principal: Principal, req: CreateExperimentRequest, ip_address: str | None = None
    ) -> Experiment:
        return await self.writer.run(create_experiment_op(principal, req, ip_address))

    async def list(self, *, limit: int = 100, offset: int = 0) -> list[Experiment]:
        def q(session: Session) -> list[Experiment]:
            rows = session.scalars(
                select(ExperimentRow)
                .order_by(ExperimentRow.created_at.desc())  # type: ignore[attr-defined]
                .limit(limit)
                .offset(offset)
            ).all()
            return [experiment_to_wire(r) for r in rows]

        return await read(self.db, q)
