"""GET /v1/audit/events at scale: totals and page positions from audit_blocks, the zone map.

A total is a count over the filtered events, and at a million events a count is a scan: a
tenth of a second for the contract's default filter (every type but ours), more for a time
range, and a deep offset walks as many rows as it skips. audit_blocks (migration 0011, kept
exact by triggers) holds per block of BLOCK sequence numbers and event type the number of
events and the bounds of their timestamps. So, without a user filter:

- a block whose bounds lie inside the time range (or with no range at all) counts all its
  events of the asked-for types, straight from audit_blocks;
- a block whose bounds lie outside it counts none;
- only a block a bound cuts through (usually one per bound: the log is written in time order)
  is counted exactly, by its events, a few thousand rows at most;

and the page query starts at the block where the offset lands, bounded to the blocks that
hold matches. With a user filter, the user's events in sequence order are in one index
(ix_audit_events_user_seq) with the other filters: counting and skipping them is a walk of
that index, the zone map only narrowing it to the sequence numbers a time range can reach.

The results are exactly those of the plain query (count(*) and ORDER BY ... LIMIT ... OFFSET
over the same filters); tests/store/test_audit_blocks.py compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, select, true
from sqlalchemy.orm import Session
from sqlmodel import col

from fetchml.store.tables import AuditBlockRow, AuditEventRow

# Sequence numbers per block: migration 0011's triggers use the same number.
BLOCK = 4096

SEQ = col(AuditEventRow.sequence_num)
ZONE = AuditBlockRow.__table__.c  # type: ignore[attr-defined]


@dataclass(frozen=True)
class EventFilter:
    start: datetime | None = None
    end: datetime | None = None
    types: tuple[str, ...] | None = None  # None: every type
    user_id: str | None = None
    after_seq: int | None = None  # only events past it, oldest first


@dataclass
class Page:
    total: int
    # The page's sequence numbers (a SELECT of sequence_num, in page order), None for none.
    keys: Select[Any] | None


def _conds(f: EventFilter, *, count: bool = False) -> list[ColumnElement[bool]]:
    """The filter as conditions on audit_events; `count`: for counting, not paging."""
    conds: list[ColumnElement[bool]] = []
    if f.after_seq is not None:
        conds.append(col(AuditEventRow.sequence_num) > f.after_seq)
    if f.start is not None:
        conds.append(col(AuditEventRow.timestamp) >= f.start)
    if f.end is not None:
        conds.append(col(AuditEventRow.timestamp) <= f.end)
    if f.types is not None:
        # Which index answers: a user's count, ix_audit_events_user_type (a range per type);
        # one type's page or count, ix_audit_events_type (in sequence order). Otherwise the
        # type is only a filter: `|| ''` keeps SQLite from answering an IN list from an index
        # and then sorting every match, or preferring another index to the user's in order.
        if (count and f.user_id is not None) or (len(f.types) == 1 and f.user_id is None):
            conds.append(col(AuditEventRow.event_type).in_(f.types))
        else:
            conds.append((col(AuditEventRow.event_type) + literal("")).in_(f.types))
    if f.user_id is not None:
        conds.append(col(AuditEventRow.user_id) == f.user_id)
    return conds


def _blocks(session: Session, f: EventFilter) -> list[tuple[int, int, bool]]:
    """(block, events wholly inside the filter, whether a bound cuts through the block) for
    every block that may hold a match, from the zone map."""
    where: list[ColumnElement[bool]] = [ZONE.events > 0]
    if f.types is not None:
        where.append(ZONE.event_type.in_(f.types))
    if f.after_seq is not None:
        where.append(ZONE.block_no >= f.after_seq // BLOCK)
    # Rows wholly outside the time range are left out; of the rest, those wholly inside count.
    inside: ColumnElement[bool] = true()
    if f.start is not None:
        where.append(ZONE.last_at >= f.start)
        inside = and_(inside, ZONE.first_at >= f.start)
    if f.end is not None:
        where.append(ZONE.first_at <= f.end)
        inside = and_(inside, ZONE.last_at <= f.end)
    counted: ColumnElement[Any] = func.sum(ZONE.events)
    cut: ColumnElement[Any] = literal(0)
    if f.start is not None or f.end is not None:
        counted = func.sum(case((inside, ZONE.events), else_=0))
        cut = func.max(case((inside, 0), else_=1))
    rows = session.execute(select(ZONE.block_no, counted, cut).where(*where).group_by(ZONE.block_no)).all()
    cut_by_cursor = None if f.after_seq is None else f.after_seq // BLOCK
    out = []
    for block, n, partial in rows:
        partial = bool(partial) or block == cut_by_cursor
        if n or partial:
            out.append((int(block), int(n or 0), partial))
    return out


def _span(block: int) -> tuple[int, int]:
    return block * BLOCK, block * BLOCK + BLOCK - 1


def page(session: Session, f: EventFilter, *, limit: int, offset: int) -> Page:
    """The total of events matching `f` and the sequence numbers of the page at `offset`:
    newest first, or with after_seq oldest first."""
    conds = _conds(f)
    ascending = f.after_seq is not None
    order = SEQ.asc() if ascending else SEQ.desc()
    if f.user_id is not None:
        if f.start is not None or f.end is not None:
            # The pages' walk of the user's events starts and ends where the range can reach.
            blocks = _blocks(session, f)
            if not blocks:
                return Page(0, None)
            lo, hi = _span(min(b for b, _, _ in blocks))[0], _span(max(b for b, _, _ in blocks))[1]
            conds.append(SEQ.between(lo, hi))
        counted = _conds(f, count=True)
        total = session.scalar(select(func.count()).select_from(AuditEventRow).where(*counted)) or 0
        keys = select(SEQ).where(*conds).order_by(order).limit(limit).offset(offset)
        return Page(total, keys if offset < total else None)

    counts: dict[int, int] = {}
    for block, n, partial in _blocks(session, f):
        if partial:
            lo, hi = _span(block)
            n = (
                session.scalar(
                    select(func.count()).select_from(AuditEventRow).where(*conds, SEQ.between(lo, hi))
                )
                or 0
            )
        if n:
            counts[block] = n
    total = sum(counts.values())
    skipped = 0
    for block in sorted(counts, reverse=not ascending):
        if skipped + counts[block] > offset:
            break
        skipped += counts[block]
    else:
        return Page(total, None)  # past the end
    # From the block the offset lands in, through the last block holding a match.
    lo, hi = (
        (_span(block)[0], _span(max(counts))[1]) if ascending else (_span(min(counts))[0], _span(block)[1])
    )
    keys = (
        select(SEQ).where(*conds, SEQ.between(lo, hi)).order_by(order).limit(limit).offset(offset - skipped)
    )
    return Page(total, keys)
