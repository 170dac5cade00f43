from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.audit import GENESIS_HASH, ChainCheck, CheckpointedVerification, verify_chain
from fetchml.core.enums import AuditEventType
from fetchml.core.models import AuditEvent, AuditEventList, ChainRoot
from fetchml.services.base import read
from fetchml.services.budget import DEFAULT_LIST_BYTES, size_of, within_budget
from fetchml.services.checkpoints import CheckpointService
from fetchml.services.principal import Principal
from fetchml.services.uow import Tx, WriteQueue
from fetchml.store.db import Database
from fetchml.store.tables import AuditEventRow

SEQ = col(AuditEventRow.sequence_num)
EVENT_SIZE = size_of(
    col(AuditEventRow.user_id),
    col(AuditEventRow.resource),
    col(AuditEventRow.action),
    col(AuditEventRow.error),
    json_columns=[col(AuditEventRow.extra_metadata)],
)


def event_to_wire(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        sequence_num=row.sequence_num,
        timestamp=row.timestamp,
        event_type=AuditEventType(row.event_type),
        user_id=row.user_id,
        resource=row.resource,
        action=row.action,
        success=row.success,
        ip_address=row.ip_address,
        error=row.error,
        prev_hash=row.prev_hash,
        event_hash=row.event_hash,
        metadata=row.extra_metadata or {},
    )


def _row_fields(row: AuditEventRow) -> dict[str, Any]:
    return {
        "sequence_num": row.sequence_num,
        "timestamp": row.timestamp,
        "event_type": row.event_type,
        "user_id": row.user_id,
        "resource": row.resource,
        "action": row.action,
        "success": row.success,
        "ip_address": row.ip_address,
        "error": row.error,
        "metadata": row.extra_metadata,
        "prev_hash": row.prev_hash,
        "event_hash": row.event_hash,
    }


class AuditService:
    def __init__(
        self,
        db: Database,
        writer: WriteQueue,
        *,
        list_budget: int = DEFAULT_LIST_BYTES,
        checkpoints: CheckpointService | None = None,
    ) -> None:
        self.db = db
        self.writer = writer
        self.list_budget = list_budget  # FETCHML_MAX_LIST_BYTES
        self.checkpoints = checkpoints

    async def list_events(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        event_type: AuditEventType | None = None,
        event_types: Collection[AuditEventType] | None = None,
        user_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after_seq: int | None = None,
    ) -> AuditEventList:
        """Newest first; with after_seq, only events past it and oldest first: a cursor that
        new appends do not shift, for reading the whole chain page by page. event_types keeps
        only those types (None: every type); total counts what the filters keep."""
        order = SEQ.desc() if after_seq is None else SEQ.asc()

        def q(session: Session) -> AuditEventList:
            conds: list[ColumnElement[bool]] = []
            if after_seq is not None:
                conds.append(col(AuditEventRow.sequence_num) > after_seq)
            if start is not None:
                conds.append(col(AuditEventRow.timestamp) >= start)
            if end is not None:
                conds.append(col(AuditEventRow.timestamp) <= end)
            if event_type is not None:
                conds.append(col(AuditEventRow.event_type) == event_type.value)
            if event_types is not None:
                conds.append(col(AuditEventRow.event_type).in_(sorted(t.value for t in event_types)))
            if user_id is not None:
                conds.append(col(AuditEventRow.user_id) == user_id)
            total = session.scalar(select(func.count()).select_from(AuditEventRow).where(*conds)) or 0
            sized = session.execute(
                select(SEQ, EVENT_SIZE).where(*conds).order_by(order).limit(limit).offset(offset)
            )
            seqs = within_budget(sized, self.list_budget)
            rows = (
                session.scalars(select(AuditEventRow).where(SEQ.in_(seqs)).order_by(order)).all()
                if seqs
                else []
            )
            return AuditEventList(
                events=[event_to_wire(r) for r in rows], total=total, limit=limit, offset=offset
            )

        return await read(self.db, q)

    async def chain_root(self) -> ChainRoot:
        def q(session: Session) -> ChainRoot:
            row = session.scalars(select(AuditEventRow).order_by(SEQ.desc()).limit(1)).first()
            if row is None:
                return ChainRoot(root_hash=GENESIS_HASH, timestamp=None, total_events=0)
            return ChainRoot(root_hash=row.event_hash, timestamp=row.timestamp, total_events=row.sequence_num)

        return await read(self.db, q)

    async def verify(self, principal: Principal, ip_address: str | None = None) -> CheckpointedVerification:
        """The hash chain, then the signed checkpoints. A broken chain is reported first (its
        first bad sequence number); otherwise the first bad checkpoint, as first_tampered (the
        sequence number it covers, or for a truncated tail the first missing one) and
        bad_checkpoint."""
        if self.checkpoints is None:
            check = await read(self.db, _walk_orm)
            cps = None
        else:
            # Both at once: the checkpoints' signatures are checked while the chain is scanned.
            check, cps = await asyncio.gather(
                self.checkpoints.verify_chain(), self.checkpoints.verify_checkpoints()
            )
        verified_at = self.writer.clock.now()
        valid, first, reason = check.valid, check.first_tampered, check.reason
        bad_cp: int | None = None
        if valid and cps is not None and cps.bad is not None:
            valid, first, reason, bad_cp = False, cps.first_tampered, cps.reason, cps.bad
        meta: dict[str, Any] = {"total_events": check.total_events, "first_tampered": first}
        if bad_cp is not None:
            meta["bad_checkpoint"] = bad_cp

        def record(tx: Tx) -> None:
            tx.audit(
                AuditEventType.AUDIT_VERIFIED,
                user_id=principal.user_id,
                resource="audit_chain",
                action="verify",
                success=valid,
                ip_address=ip_address,
                error=reason,
                metadata=meta,
            )

        await self.writer.run(record)
        return CheckpointedVerification(
            valid=valid,
            total_events=check.total_events,
            first_tampered=first,
            chain_root_hash=check.root_hash,
            verified_at=verified_at,
            reason=reason,
            checkpoints_verified=cps.checked if cps else 0,
            bad_checkpoint=bad_cp,
            latest_checkpoint=cps.latest if cps else None,
        )


def _walk_orm(session: Session) -> ChainCheck:
    """The reference walk over ORM rows (no checkpoint service: tools and tests)."""

    def events() -> Iterator[dict[str, Any]]:
        for row in session.scalars(select(AuditEventRow).order_by(SEQ).execution_options(yield_per=2000)):
            yield _row_fields(row)

    return verify_chain(events())
