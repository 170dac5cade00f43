"""Engines and transactions.

Writes are serialised per database, not per process: SQLite takes its write lock up front
(BEGIN IMMEDIATE), PostgreSQL takes a transaction-scoped advisory lock. That makes the
audit chain's read-the-head-then-append safe across several processes sharing one database.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

WRITE_LOCK_KEY = 0x46_45_54_43_48  # "FETCH": the advisory lock id guarding writes on PostgreSQL


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_engine(url: str, *, write: bool, synchronous: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
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
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

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
    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.is_sqlite = _is_sqlite(url)
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:" and not path.startswith("file:"):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                _private_sqlite_files(Path(path))
            self.read_engine = _sqlite_engine(url, write=False, synchronous=sqlite_synchronous)
            self.write_engine = _sqlite_engine(url, write=True, synchronous=sqlite_synchronous)
        else:
            self.read_engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
            self.write_engine = self.read_engine
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._migrated = False
        self._migrate_lock = threading.Lock()

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
            from fetchml.store.migrate import upgrade_to_head

            upgrade_to_head(self.write_engine)
            self._migrated = True

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()
