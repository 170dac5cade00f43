"""Write transactions with the audit chain inside them, and the group-commit writer.

Every mutation is an `op(tx) -> result` run inside one database transaction that also
appends its audit events, so a change and its audit record commit or vanish together.

`WriteQueue` runs ops on one thread and commits whatever has queued up as one
transaction (each op inside its own savepoint, so one failing op does not sink its
neighbours). Under load that turns N fsyncs into one; a caller is answered only after
the commit that holds its change.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future as SyncFuture
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from fetchml.core.audit import GENESIS_HASH, event_hash
from fetchml.core.enums import AuditEventType
from fetchml.core.errors import FetchmlError, InternalError, ServiceUnavailableError
from fetchml.core.timeutil import utcnow
from fetchml.store.db import Database
from fetchml.store.tables import AuditEventRow

T = TypeVar("T")
log = logging.getLogger("fetchml.writer")


class Tx:
    """A write transaction plus the head of the audit chain as this transaction sees it."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.head: tuple[int, str] | None = None

    def _load_head(self) -> tuple[int, str]:
        row = self.session.execute(
            select(AuditEventRow.sequence_num, AuditEventRow.event_hash)
            .order_by(AuditEventRow.sequence_num.desc())  # type: ignore[attr-defined]
            .limit(1)
        ).first()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)

    def audit(
        self,
        event_type: AuditEventType,
        *,
        user_id: str | None = None,
        resource: str | None = None,
        action: str | None = None,
        success: bool = True,
        ip_address: str | None = None,
        error: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AuditEventRow:
        if self.head is None:
            self.head = self._load_head()
        seq, prev = self.head
        fields: dict[str, Any] = {
            "sequence_num": seq + 1,
            "timestamp": utcnow(),
            "event_type": event_type.value,
            "user_id": user_id,
            "resource": resource,
            "action": action,
            "success": success,
            "ip_address": ip_address,
            "error": error,
            "metadata": metadata or {},
        }
        digest = event_hash(prev, fields)
        row = AuditEventRow(
            sequence_num=fields["sequence_num"],
            timestamp=fields["timestamp"],
            event_type=fields["event_type"],
            user_id=user_id,
            resource=resource,
            action=action,
            success=success,
            ip_address=ip_address,
            error=error,
            extra_metadata=fields["metadata"],
            prev_hash=prev,
            event_hash=digest,
        )
        self.session.add(row)
        self.head = (seq + 1, digest)
        return row


def run_write(db: Database, op: Callable[[Tx], T]) -> T:
    """Run one op in its own transaction on the calling thread (CLI tools, tests)."""
    with db.write() as session:
        return op(Tx(session))


def _storage_error(exc: BaseException) -> FetchmlError:
    if isinstance(exc, FetchmlError):
        return exc
    if isinstance(exc, OperationalError):
        return ServiceUnavailableError("The database is busy; retry shortly")
    return InternalError()


@dataclass
class _Item:
    op: Callable[[Tx], Any]
    deliver: Callable[[Any, BaseException | None], None]
    result: Any = None
    error: BaseException | None = field(default=None)


class WriteQueue:
    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        self.db = db
        self.max_batch = max_batch
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fetchml-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def run(self, op: Callable[[Tx], T]) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def deliver(result: Any, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, fut, result, error)

        self._q.put(_Item(op, deliver))
        return await fut

    def run_blocking(self, op: Callable[[Tx], T], timeout: float | None = 60) -> T:
        fut: SyncFuture[T] = SyncFuture()

        def deliver(result: Any, error: BaseException | None) -> None:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

        self._q.put(_Item(op, deliver))
        return fut.result(timeout)

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            for item in batch:
                item.deliver(item.result, item.error)
            if stop:
                return

    def _commit(self, batch: list[_Item]) -> None:
        try:
            with self.db.write() as session:
                tx = Tx(session)
                for item in batch:
                    head = tx.head
                    savepoint = session.begin_nested()
                    try:
                        item.result = item.op(tx)
                        savepoint.commit()
                    except Exception as exc:
                        savepoint.rollback()
                        tx.head = head
                        if not isinstance(exc, FetchmlError):
                            log.exception("write op failed")
                        item.error = _storage_error(exc)
        except (SQLAlchemyError, OSError) as exc:
            log.exception("write batch of %d failed to commit", len(batch))
            err = _storage_error(exc)
            for item in batch:
                item.result, item.error = None, (item.error or err)


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
