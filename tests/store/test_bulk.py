"""store/bulk: the writer's plain statements. On SQLite they run on the driver's own cursor; what
they store must be what SQLAlchemy would have stored, and a driver error must still reach the
callers as SQLAlchemy's error, through the engine's error hook (a full disk marks the database)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError

from fetchml.store.bulk import execute_many, fetch_rows, insert_rows, is_raw, placeholder
from fetchml.store.db import Database
from fetchml.store.tables import IdempotencyKeyRow

TABLE = IdempotencyKeyRow.__table__  # type: ignore[attr-defined]
TIMES = [
    datetime(2026, 12, 3, 14, 9, 40, 212345, tzinfo=UTC),
    datetime(2026, 12, 3, 14, 9, 40, tzinfo=UTC),  # no microseconds: still six digits
    datetime(2026, 12, 3, 16, 9, 40, 5, tzinfo=timezone(timedelta(hours=2))),  # stored as UTC
    datetime(2026, 1, 2, 3, 4, 5, 600000),  # naive: taken as UTC
]


@pytest.fixture(autouse=True)
def _schema(db: Database) -> None:
    db.migrate()


def _row(key: str, at: datetime) -> dict[str, Any]:
    return {"user_id": "u", "key": key, "request_hash": "h", "task_id": "t", "created_at": at}


def test_rows_are_stored_as_sqlalchemy_stores_them(db: Database, tmp_path: Path) -> None:
    with db.write() as session:
        conn = session.connection()
        insert_rows(conn, TABLE, [_row(f"bulk-{i}", at) for i, at in enumerate(TIMES)])
        insert_rows(conn, TABLE, [_row("bulk-one", TIMES[0])])  # one row: execute, not executemany
        conn.execute(TABLE.insert(), [_row(f"core-{i}", at) for i, at in enumerate(TIMES)])
    with db.read() as session:
        got = {r.key: r.created_at for r in session.query(IdempotencyKeyRow)}
    for i, at in enumerate(TIMES):
        want = at if at.tzinfo else at.replace(tzinfo=UTC)
        assert got[f"bulk-{i}"] == got[f"core-{i}"] == want
    assert got["bulk-one"] == TIMES[0]
    if db.is_sqlite:
        raw = sqlite3.connect(tmp_path / "m.db")
        text = dict(raw.execute("SELECT key, created_at FROM idempotency_keys").fetchall())
        raw.close()
        for i in range(len(TIMES)):
            assert text[f"bulk-{i}"] == text[f"core-{i}"]  # the same spelling, byte for byte
        assert text["bulk-1"] == "2026-12-03 14:09:40.000000"


def test_sqlite_runs_on_the_driver_cursor(db: Database) -> None:
    """Nothing of it passes through SQLAlchemy's execution (no cursor events), on SQLite only."""
    seen: list[str] = []
    event.listen(db.write_engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    with db.write() as session:
        conn = session.connection()
        assert is_raw(conn) is db.is_sqlite
        seen.clear()
        insert_rows(conn, TABLE, [_row("a", TIMES[0]), _row("b", TIMES[1])])
        rows = fetch_rows(conn, "SELECT count(*) FROM idempotency_keys")
    assert rows == [(2,)]
    assert (seen == []) is db.is_sqlite


def test_a_driver_error_is_sqlalchemys_and_nothing_is_half_written(db: Database) -> None:
    errors: list[BaseException] = []
    event.listen(db.write_engine, "handle_error", lambda ctx: errors.append(ctx.original_exception))
    with db.write() as session:
        insert_rows(session.connection(), TABLE, [_row("dup", TIMES[0])])
    with pytest.raises(IntegrityError), db.write() as session:
        # The second row collides with the committed one: the transaction takes both back.
        insert_rows(session.connection(), TABLE, [_row("fresh", TIMES[0]), _row("dup", TIMES[0])])
    assert errors, "the engine's handle_error hook saw the driver's error"
    with pytest.raises(DBAPIError), db.write() as session:  # not the driver's own class
        fetch_rows(session.connection(), "SELECT nope FROM idempotency_keys")
    with db.read() as session:
        assert [r.key for r in session.query(IdempotencyKeyRow)] == ["dup"]


def test_execute_many_with_the_drivers_placeholder(db: Database) -> None:
    mark = None
    with db.write() as session:
        conn = session.connection()
        mark = placeholder(conn)
        sql = (
            f"INSERT INTO idempotency_keys (user_id, key, request_hash, task_id, created_at) "
            f"VALUES ({mark}, {mark}, 'h', 't', {mark})"
        )
        execute_many(conn, sql, [("u", "x", "2026-01-01 00:00:00.000000")])
        execute_many(conn, sql, [("u", k, "2026-01-01 00:00:00.000000") for k in ("y", "z")])
        count = fetch_rows(conn, f"SELECT count(*) FROM idempotency_keys WHERE user_id = {mark}", ("u",))
    assert mark == ("?" if db.is_sqlite else "%s")
    assert count == [(3,)]
