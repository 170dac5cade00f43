"""Engines and transactions.

Writes are serialised per database, not per process: SQLite takes its write lock up front
(BEGIN IMMEDIATE), PostgreSQL takes a transaction-scoped advisory lock. That makes the
audit chain's read-the-head-then-append safe across several processes sharing one database.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from fetchml.store.bulk import execute_plain

WRITE_LOCK_KEY = 0x46_45_54_43_48  # "FETCH": the advisory lock id guarding writes on PostgreSQL

# What a database failure means to a caller: wait a moment (busy), wait until someone frees
# space (full), or wait until the database is back (unavailable). Anything else is a bug.
StorageFault = Literal["busy", "full", "unavailable"]

_FULL_TEXT = ("database or disk is full", "no space left on device", "could not extend file", "disk full")
_BUSY_TEXT = ("database is locked", "database table is locked", "database schema is locked")
# PostgreSQL SQLSTATEs: 53100 disk_full; 53300 too_many_connections, 55P03 lock_not_available,
# 40P01 deadlock_detected, 57014 query_canceled (statement/lock timeout); class 08 connection
# exceptions and 57P01-57P03 (admin/crash shutdown, cannot connect now) mean the server is away.
_PG_FULL = frozenset({"53100"})
_PG_BUSY = frozenset({"53300", "55P03", "40P01", "57014"})
_PG_AWAY = frozenset({"57P01", "57P02", "57P03"})
# sqlite3 raises OperationalError for faults in the statement itself too: those are bugs.
_SQLITE_BUGS = ("no such ", "syntax error", "near ", "table ", "index ", "cannot ")


def _classify_one(exc: BaseException) -> StorageFault | None:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "full"
    if isinstance(exc, PoolTimeoutError):
        return "busy"  # every pooled connection is in use
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    message = str(orig).lower()
    state = str(getattr(orig, "sqlstate", "") or "")
    if state in _PG_FULL or any(t in message for t in _FULL_TEXT):
        return "full"
    if state in _PG_BUSY or any(t in message for t in _BUSY_TEXT):
        return "busy"
    if exc.connection_invalidated or state.startswith("08") or state in _PG_AWAY:
        return "unavailable"
    if isinstance(exc, (OperationalError, InterfaceError)) and not message.startswith(_SQLITE_BUGS):
        # Connection refused, server closed the connection, unable to open the file, I/O error.
        return "unavailable"
    return None  # integrity, programming and data errors are the caller's or ours


def classify_db_error(exc: BaseException) -> StorageFault | None:
    """The storage fault behind `exc` (looking through its causes), or None for any other error."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        kind = _classify_one(cur)
        if kind is not None:
            return kind
        cur = cur.__cause__ or cur.__context__
    return None


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_engine(url: str, *, write: bool, synchronous: str, busy_timeout: float) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout},
        pool_size=1 if write else 8,
        max_overflow=0 if write else 8,
        pool_pre_ping=False,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own BEGIN handling defeats savepoints and BEGIN IMMEDIATE; we issue BEGIN ourselves.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        execute_plain(conn, "BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _private_sqlite_files(path: Path) -> None:
    """The database file and its -wal/-shm companions readable by their owner only (0600).

    Created here before SQLite opens it (SQLite would use 0644 under the usual umask; it gives
    the -wal and -shm files the database file's mode), and tightened if an older run left them
    readable by others."""
    import os

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        with contextlib.suppress(FileNotFoundError):
            if p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)


class Database:
    def __init__(
        self, url: str, *, sqlite_synchronous: str = "FULL", sqlite_busy_timeout: float = 30.0
    ) -> None:
        self.url = url
        self.is_sqlite = _is_sqlite(url)
        # Set when a statement failed for want of space; cleared by the writer after a commit
        # that wrote rows (or /health's probe write). /health reports degraded while it is set.
        self.storage_full = False
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:" and not path.startswith("file:"):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                _private_sqlite_files(Path(path))
            busy = sqlite_busy_timeout
            self.read_engine = _sqlite_engine(
                url, write=False, synchronous=sqlite_synchronous, busy_timeout=busy
            )
            self.write_engine = _sqlite_engine(
                url, write=True, synchronous=sqlite_synchronous, busy_timeout=busy
            )
        else:
            # pre_ping: after a PostgreSQL restart every pooled connection is dead; each is found
            # out and replaced on checkout instead of failing one request apiece.
            self.read_engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
            self.write_engine = self.read_engine
        for engine in {self.read_engine, self.write_engine}:
            event.listen(engine, "handle_error", self._on_error)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._migrated = False
        self._migrate_lock = threading.Lock()

    def _on_error(self, ctx: ExceptionContext) -> None:
        kind = classify_db_error(ctx.sqlalchemy_exception or ctx.original_exception)
        if kind == "full":
            self.storage_full = True
        # A connection that met a full disk or a vanished server is not reused: the pool opens a
        # fresh one once the fault clears, so recovery needs no restart.
        if kind in ("full", "unavailable") and not ctx.is_pre_ping:
            ctx.is_disconnect = True

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction holding the database-wide write lock until commit."""
        with self._write() as session, session.begin():
            if not self.is_sqlite:
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_KEY})
            yield session

    def migrate(self) -> None:
        with self._migrate_lock:
            if self._migrated:
                return
            from fetchml.store.schemahead import at_head

            if not at_head(self.write_engine):  # alembic only when there is work for it
                from fetchml.store.migrate import upgrade_to_head

                upgrade_to_head(self.write_engine)
            self._migrated = True

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()
