from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.core.audit import GENESIS_HASH, ChainCheck, CheckpointedVerification, verify_chain
from fetchml.core.enums import AuditEventType
from fetchml.core.models import AuditEvent, AuditEventList, ChainRoot
from fetchml.services.auditquery import EventFilter, page
from fetchml.services.base import read
from fetchml.services.budget import DEFAULT_LIST_BYTES, big_page, size_of, within_budget
from fetchml.services.checkpoints import CheckpointService
from fetchml.services.principal import Principal
from fetchml.services.write_queue import Tx, WriteQueue
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


# A page's rows as plain tuples, validated in one call with the page: a page of 100 events is
# read for every GET, and ORM objects (identity map, instance state) and a model built per row
# were about half of building it.
_EVENT_COLUMNS = list(AuditEventRow.__table__.c)  # type: ignore[attr-defined]
_EVENT_FIELDS = tuple(c.name for c in _EVENT_COLUMNS)
if set(_EVENT_FIELDS) != set(AuditEvent.model_fields):
    raise RuntimeError("audit_events' columns and AuditEvent's fields differ: map them in _event_values")


def _event_values(session: Session, seqs: list[int], order: Any) -> list[dict[str, Any]]:
    """The events with these sequence numbers, in `order`, as AuditEvent's fields."""
    rows = session.execute(select(*_EVENT_COLUMNS).where(SEQ.in_(seqs)).order_by(order))
    events = [dict(zip(_EVENT_FIELDS, row, strict=True)) for row in rows]
    for event in events:
        if not event["metadata"]:
            event["metadata"] = {}
    return events


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
        types: tuple[str, ...] | None = (event_type.value,) if event_type is not None else None
        if event_types is not None:
            wanted = sorted(t.value for t in event_types)
            types = tuple(t for t in wanted if types is None or t in types)
        where = EventFilter(start=start, end=end, types=types, user_id=user_id, after_seq=after_seq)

        def q(session: Session) -> AuditEventList:
            # Totals and page positions through the zone map (services/auditquery); then the
            # page's sizes, and only the rows that fit the byte budget are loaded.
            found = page(session, where, limit=limit, offset=offset)
            seqs: list[int] = []
            if found.keys is not None:
                sized = session.execute(
                    select(SEQ, EVENT_SIZE).where(SEQ.in_(found.keys.scalar_subquery())).order_by(order)
                )
                seqs = within_budget(sized, self.list_budget)
            events = _event_values(session, seqs, order) if seqs else []
            return AuditEventList.model_validate(
                {"events": events, "total": found.total, "limit": limit, "offset": offset}
            )

        async with big_page(limit):
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
