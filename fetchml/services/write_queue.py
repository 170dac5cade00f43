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
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future as SyncFuture
from dataclasses import dataclass, field
from functools import cache
from itertools import groupby
from typing import Any, TypeVar

from sqlalchemy import Table, event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, SessionTransaction

from fetchml.core.audit import GENESIS_HASH, event_hash
from fetchml.core.clock import SYSTEM_CLOCK, Clock
from fetchml.core.enums import AuditEventType
from fetchml.core.errors import FetchmlError, InternalError, ServiceUnavailableError, StorageFullError
from fetchml.core.events import FeedEvent
from fetchml.core.redact import redact_text, redact_value
from fetchml.services.feedlog import DEFAULT_REPLAY_WINDOW, Capture
from fetchml.store.bulk import fetch_rows, insert_rows
from fetchml.store.db import Database, classify_db_error
from fetchml.store.tables import AuditEventRow

T = TypeVar("T")
log = logging.getLogger("fetchml.writer")


@cache
def _core_target(entity: type[Any]) -> tuple[Table, dict[str, str]]:
    mapper = sa_inspect(entity)
    keymap = {attr.key: attr.columns[0].key for attr in mapper.column_attrs}
    return mapper.local_table, keymap


_AUDIT_HEAD = (
    f"SELECT sequence_num, event_hash FROM {AuditEventRow.__tablename__} ORDER BY sequence_num DESC LIMIT 1"
)


_TX_KEY = "fetchml.tx"


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, ctx: Any) -> None:
    # One listener for every session, registered once: listening on each transaction's session
    # cost as much as a small insert (SQLAlchemy builds a dispatcher per instance).
    tx: Tx | None = session.info.get(_TX_KEY)
    if tx is not None:
        tx.flushed = True
        tx.capture.after_flush(session, ctx)


class Tx:
    """A write transaction plus the head of the audit chain as this transaction sees it.

    Plain inserts (`insert`, `audit`) are deferred and sent as one executemany per table:
    that is what makes a batch of submissions cheap. An op that needs the ORM session gets
    a savepoint opened for it on first use, so a failing op is undone without touching
    its neighbours; a failing insert-only op is undone by dropping its deferred rows.

    `solo`: the transaction holds one op, and its caller rolls the whole transaction back if
    that op fails. No savepoint is needed then; most transactions under light load hold one
    op, and the savepoint's two statements and bookkeeping were a fifth of a status report's
    time on the writer.
    """

    def __init__(
        self,
        session: Session,
        clock: Clock = SYSTEM_CLOCK,
        *,
        events_window: int = DEFAULT_REPLAY_WINDOW,
        solo: bool = False,
    ) -> None:
        self._session = session
        self._solo = solo
        # The time every op in this transaction stamps and judges by (expiries, leases, aging).
        self.clock = clock
        # The feed's events come from what this transaction changes, not from the services.
        self.capture = Capture()
        self._events_window = events_window
        session.info[_TX_KEY] = self  # for _after_flush
        self.flushed = False  # the session flushed changes (ORM rows) at least once
        self.head: tuple[int, str] | None = None
        self._pending: list[tuple[type[Any], dict[str, Any]]] = []
        self._op_start = 0
        self._in_op = False
        self._savepoint: SessionTransaction | None = None
        self._used = False  # the op in progress used the session
        self.wrote = False  # rows went out: a commit of this Tx proves the storage takes writes

    @property
    def session(self) -> Session:
        self._used = self._used or self._in_op
        if self._in_op and self._savepoint is None and not self._solo:
            # Earlier ops' rows go out first, outside this op's savepoint.
            self._flush(upto=self._op_start)
            self._savepoint = self._session.begin_nested()
        self._flush()
        return self._session

    def insert(self, entity: type[Any], values: dict[str, Any]) -> None:
        self._pending.append((entity, values))
        self.capture.inserted(entity, values)

    def wake(self, *topics: str) -> None:
        """Wake what waits on these topics in every server, once this transaction commits
        (log followers of a task that got lines, say); feed events wake their own topics."""
        self.capture.wakes.update(topics)

    def worker_offline_reason(self, worker_id: str, reason: str) -> None:
        self.capture.reasons[worker_id] = reason

    def finish(self) -> list[FeedEvent]:
        """Last step before the commit: the feed's rows and (PostgreSQL) its NOTIFY."""
        session = self.session
        return self.capture.finish(
            session, self.clock.now(), is_sqlite=session.get_bind().dialect.name == "sqlite",
            window=self._events_window,
        )  # fmt: skip

    def _flush(self, upto: int | None = None) -> None:
        items = self._pending if upto is None else self._pending[:upto]
        if not items:
            return
        self.wrote = True
        conn = self._session.connection()
        for entity, group in groupby(items, key=lambda item: item[0]):
            table, keymap = _core_target(entity)
            # The driver's executemany: the ORM bulk path, and even Core's, cost more per row.
            insert_rows(conn, table, (values for _, values in group), keymap)
        del self._pending[: len(items)]
        self._op_start = max(0, self._op_start - len(items))

    def run_op(self, op: Callable[[Tx], T]) -> T:
        head = self.head
        self._op_start = len(self._pending)
        events_start, wakes = len(self.capture.events), set(self.capture.wakes)
        self._in_op, self._savepoint, self._used = True, None, False
        try:
            result = op(self)
            if self._savepoint is not None:
                self._flush()
                self._savepoint.commit()
            elif self._used:
                # As the savepoint's commit does: the op's changes go out now, so the feed sees
                # them (Tx.finish) and a failing flush is this op's failure.
                self._flush()
                self._session.flush()
            return result
        except BaseException:
            if self._savepoint is not None:
                self._savepoint.rollback()
            del self._pending[self._op_start :]
            del self.capture.events[events_start:]
            self.capture.wakes = wakes
            self.head = head
            raise
        finally:
            self._in_op, self._savepoint = False, None

    def flush(self) -> None:
        self._flush()

    def _load_head(self) -> tuple[int, str]:
        # Plain SQL on the transaction's connection: the chain's rows only ever arrive through
        # `audit` (deferred inserts), so the ORM's autoflush before a query has nothing to add.
        rows = fetch_rows(self._session.connection(), _AUDIT_HEAD)
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS_HASH)

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
    ) -> None:
        if self.head is None:
            self.head = self._load_head()
        seq, prev = self.head
        fields: dict[str, Any] = {
            "sequence_num": seq + 1,
            "timestamp": self.clock.now(),
            "event_type": event_type.value,
            "user_id": user_id,
            "resource": resource,
            "action": action,
            "success": success,
            "ip_address": ip_address,
            # Credentials inside URLs (a dataset source in an error, say) never reach the log.
            "error": None if error is None else redact_text(error),
            "metadata": redact_value(metadata or {}),
        }
        digest = event_hash(prev, fields)
        values = dict(fields, prev_hash=prev, event_hash=digest)
        values["extra_metadata"] = values.pop("metadata")
        self.insert(AuditEventRow, values)
        self.head = (seq + 1, digest)


def run_write(db: Database, op: Callable[[Tx], T], clock: Clock = SYSTEM_CLOCK) -> T:
    """Run one op in its own transaction on the calling thread (CLI tools, tests)."""
    with db.write() as session:  # an op that raises takes the whole transaction back with it
        tx = Tx(session, clock, solo=True)
        result = tx.run_op(op)
        tx.finish()
        tx.flush()
        return result


def storage_error(exc: BaseException) -> FetchmlError | None:
    """The domain error for a storage fault (503 busy / 503 unavailable / 507 full), or None
    when `exc` is not one."""
    kind = classify_db_error(exc)
    if kind == "full":
        return StorageFullError()
    if kind == "busy":
        return ServiceUnavailableError("The database is busy; retry shortly", retry_after=1)
    if kind == "unavailable":
        return ServiceUnavailableError("The database is unavailable; retry shortly", retry_after=2)
    return None


def describe_fault(exc: BaseException) -> str:
    """One short line for the log: the driver's first line, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first[:200]}"


def _storage_error(exc: BaseException) -> FetchmlError:
    if isinstance(exc, FetchmlError):
        return exc
    return storage_error(exc) or InternalError()


class _SoloFailed(Exception):
    """The one op of a transaction failed: roll the transaction back (see `Tx`)."""


@dataclass
class _Item:
    op: Callable[[Tx], Any]
    # A blocking caller's: called on the writer thread. An async caller's future is settled on
    # its loop instead, all of a batch's at once (see _deliver).
    deliver: Callable[[Any, BaseException | None], None] | None = None
    result: Any = None
    error: BaseException | None = field(default=None)
    queued: float = field(default_factory=time.monotonic)
    loop: asyncio.AbstractEventLoop | None = None
    fut: asyncio.Future[Any] | None = None


class WriteQueue:
    """`healthy_since`: since when this process has been able to commit (so to take heartbeats)
    without interruption. It starts at construction (a server start) and moves to "now" whenever
    the writer sees a stall: an op that waited longer than `stall_threshold` to run, a write
    lock that took longer than that to get, a batch that failed for a storage fault, or a gap
    the lease sweeper noticed in its own schedule (`mark_stall`). The sweeper grants leases one
    heartbeat timeout from it, so workers are not punished for the server's own outages."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 256,
        stall_threshold: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.stall_threshold = stall_threshold
        self.clock = clock
        self.healthy_since = clock.now()
        self._q: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        # Called on the writer thread after each commit with its feed events and wake topics.
        self.on_commit: list[Callable[[list[FeedEvent], set[str]], None]] = []
        self.events_window = DEFAULT_REPLAY_WINDOW
        self._thread: threading.Thread | None = None

    def mark_stall(self, why: str) -> None:
        now = self.clock.now()
        if now > self.healthy_since:
            self.healthy_since = now
        log.warning("write stall (%s): leases get one heartbeat timeout of grace from now", why)

    def start(self) -> None:
        # Grace counts from when this process can take heartbeats, not from its construction.
        self.healthy_since = max(self.healthy_since, self.clock.now())
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
        self._q.put(_Item(op, loop=loop, fut=fut))
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
            waited = time.monotonic() - first.queued
            if waited > self.stall_threshold:
                self.mark_stall(f"a write waited {waited:.1f}s in the queue")
            try:
                self._commit_group(batch)
            except BaseException as exc:  # the writer thread must outlive any one batch
                kind = classify_db_error(exc)
                if kind is None:
                    log.exception("write batch of %d failed", len(batch))
                else:
                    # An outage, not a bug: one line per batch, no traceback per request.
                    log.warning(
                        "write batch of %d failed: database %s (%s)", len(batch), kind, describe_fault(exc)
                    )
                    self.mark_stall(f"database {kind}")
                for item in batch:
                    item.result, item.error = None, (item.error or _storage_error(exc))
            _deliver(batch)
            if stop:
                return

    def _commit_group(self, batch: list[_Item]) -> None:
        try:
            self._commit(batch)
        except Exception as exc:
            if classify_db_error(exc) is not None:
                raise  # the database itself is down, full or locked: every op would fail alike
            if len(batch) == 1:
                raise
            # Some op's rows broke the shared commit (a constraint, a value the driver rejects).
            # Nothing was committed; rerun each op alone so only the culprit fails.
            log.warning("group commit of %d failed; retrying one by one", len(batch))
            for item in batch:
                item.result, item.error = None, None
                try:
                    self._commit([item])
                except Exception as exc:
                    item.result, item.error = None, (item.error or _storage_error(exc))

    def _commit(self, batch: list[_Item]) -> None:
        with contextlib.suppress(_SoloFailed):  # rolled back; the op's error is its item's
            self._commit_tx(batch)

    def _commit_tx(self, batch: list[_Item]) -> None:
        asked = time.monotonic()
        with self.db.write() as session:
            session.connection()  # BEGIN IMMEDIATE now, so the wait for the write lock is timed here
            took = time.monotonic() - asked
            if took > self.stall_threshold:
                # Another process (or server) held the write lock: heartbeats could not commit.
                self.mark_stall(f"the write lock took {took:.1f}s")
            solo = len(batch) == 1
            tx = Tx(session, self.clock, events_window=self.events_window, solo=solo)
            for item in batch:
                try:
                    item.result = tx.run_op(item.op)
                except Exception as exc:
                    if classify_db_error(exc) is not None:
                        # The database is down, full or locked, not this op at fault: the ops
                        # after it would meet the same fault (on PostgreSQL, a lost connection
                        # even refuses them with a PendingRollbackError), so the batch fails
                        # as one, each op with this storage error (see _loop).
                        raise
                    if not isinstance(exc, FetchmlError):
                        log.exception("write op failed")
                    item.error = _storage_error(exc)
                    if solo:
                        # Without a savepoint, what the op did before it failed is only undone
                        # by rolling back the whole transaction, which holds nothing else.
                        raise _SoloFailed from exc
            events = tx.finish()
            tx.flush()
            wrote = tx.wrote or bool(tx.flushed or session.new or session.dirty or session.deleted)
        if wrote and self.db.storage_full:
            self.db.storage_full = False
            log.warning("storage accepts writes again")
        if events or tx.capture.wakes:
            for listener in self.on_commit:
                try:
                    listener(events, tx.capture.wakes)
                except Exception:  # a feed fault must not fail writes that did commit
                    log.exception("commit listener failed")


def _deliver(batch: list[_Item]) -> None:
    """Each op's result to its caller. An event loop gets its share of the batch in one
    callback: a wake-up of the loop (a write to its self-pipe, a turn of its selector) per
    batch rather than per op, which at a few thousand submissions a second is CPU the loop
    thread needs for requests."""
    settles: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
    for item in batch:
        if item.loop is not None:
            settles.setdefault(item.loop, []).append(item)
        elif item.deliver is not None:
            item.deliver(item.result, item.error)
    for loop, items in settles.items():
        try:
            loop.call_soon_threadsafe(_settle_all, items)
        except RuntimeError:  # the loop is closed: nobody is waiting for these any more
            log.debug("write results for a closed event loop dropped")


def _settle_all(items: list[_Item]) -> None:
    for item in items:
        fut = item.fut
        if fut is None or fut.cancelled():
            continue
        if item.error is not None:
            fut.set_exception(item.error)
        else:
            fut.set_result(item.result)
