"""alembic migrations build exactly the SQLModel schema, on SQLite and on PostgreSQL; connections
get the pragmas (SQLite) and the write lock (PostgreSQL) we rely on."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import fetchml.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from fetchml.store.db import WRITE_LOCK_KEY, Database
from fetchml.store.migrate import current_revision, downgrade_to, head_revision, upgrade_to_head
from tests.backends import (
    BACKENDS_ENV,
    POSTGRESQL,
    create_database,
    drop_database,
    require_backend,
    selected_backends,
    skip_or_fail,
)
from tests.harness import REPO, die_with_parent

APP_TABLES = {"tasks", "experiments", "api_keys", "audit_events", "workers", "task_logs", "artifacts"}


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'm.db'}")
    yield database
    database.dispose()


def schema(engine: sa.Engine) -> list[tuple[Any, ...]]:
    """The schema as the database reports it: on SQLite the DDL text itself (sqlite_master), on
    PostgreSQL SQLAlchemy's inspection of every table (columns with types, nullability and
    defaults; keys, unique constraints, indexes, foreign keys)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]
    insp = sa.inspect(engine)
    out: list[tuple[Any, ...]] = []
    for name in sorted(insp.get_table_names()):
        columns = tuple(
            (c["name"], str(c["type"]), c["nullable"], c.get("default"), bool(c.get("autoincrement")))
            for c in insp.get_columns(name)
        )
        pk = insp.get_pk_constraint(name)
        uniques = sorted(
            (u["name"] or "", tuple(u["column_names"])) for u in insp.get_unique_constraints(name)
        )
        indexes = sorted(
            (i["name"] or "", tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
            for i in insp.get_indexes(name)
        )
        fks = sorted(
            (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
            for f in insp.get_foreign_keys(name)
        )
        out.append(("table", name, columns, tuple(pk["constrained_columns"]), uniques, indexes, fks))
    return out


def table_names(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def _compare_server_default(
    _context: Any,
    _inspected_column: Any,
    metadata_column: sa.Column[Any],
    inspected_default: str | None,
    _metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """PostgreSQL has no `=` for the json type, so alembic's own check of a JSON column's default
    (`SELECT '[]'::json = '[]'`) cannot run: compare those defaults as text instead."""
    if not isinstance(metadata_column.type, sa.JSON):
        return None  # alembic's default comparison

    def norm(default: str | None) -> str | None:
        return None if default is None else default.split("::", 1)[0].strip().strip("'")

    return norm(inspected_default) != norm(rendered_metadata_default)


def diff_against(engine: sa.Engine, metadata: sa.MetaData) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": _compare_server_default}
        )
        return list(compare_metadata(ctx, metadata))


def test_upgrade_head_on_empty_database_matches_the_models(db: Database) -> None:
    assert current_revision(db.write_engine) is None
    upgrade_to_head(db.write_engine)
    assert current_revision(db.write_engine) == head_revision(db.write_engine)
    assert table_names(db.write_engine) >= APP_TABLES
    assert diff_against(db.write_engine, SQLModel.metadata) == []


def test_the_comparison_would_notice_a_difference(db: Database) -> None:
    """Guards the test above: compare_metadata must see a column the migrations lack."""
    upgrade_to_head(db.write_engine)
    md = sa.MetaData()
    for table in SQLModel.metadata.tables.values():
        table.to_metadata(md)
    sa.Table("tasks", md, sa.Column("not_migrated", sa.Integer), extend_existing=True)
    diffs = diff_against(db.write_engine, md)
    assert any("not_migrated" in repr(d) for d in diffs), diffs


def test_downgrade_to_base_then_upgrade_gives_the_identical_schema(db: Database) -> None:
    upgrade_to_head(db.write_engine)
    first = schema(db.write_engine)
    assert {entry[1] for entry in first} >= APP_TABLES

    downgrade_to(db.write_engine, "base")
    assert table_names(db.write_engine) & APP_TABLES == set()
    assert current_revision(db.write_engine) is None

    upgrade_to_head(db.write_engine)
    assert schema(db.write_engine) == first
    assert diff_against(db.write_engine, SQLModel.metadata) == []


def test_migrate_is_idempotent(db: Database) -> None:
    db.migrate()
    before = schema(db.write_engine)
    db.migrate()
    upgrade_to_head(db.write_engine)
    assert schema(db.write_engine) == before


def test_processes_migrating_one_database_at_once_all_succeed(db_url: str) -> None:
    """Servers started together on one database each run the migrations: they take turns
    instead of creating the same tables twice."""
    script = "import sys; from fetchml.store.db import Database; Database(sys.argv[1]).migrate()"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, db_url],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(outputs)
    db = Database(db_url)
    try:
        assert current_revision(db.write_engine) == head_revision(db.write_engine)
        assert diff_against(db.write_engine, SQLModel.metadata) == []
    finally:
        db.dispose()


# --- SQLite: pragmas ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["read_engine", "write_engine"])
def test_connections_use_wal_foreign_keys_and_busy_timeout(sqlite_db: Database, which: str) -> None:
    sqlite_db.migrate()
    engine: sa.Engine = getattr(sqlite_db, which)
    with engine.connect() as conn:
        assert str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000


def test_sessions_have_the_pragmas_too(sqlite_db: Database) -> None:
    sqlite_db.migrate()
    with sqlite_db.read() as s:
        assert s.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        assert int(s.execute(sa.text("PRAGMA busy_timeout")).scalar() or 0) >= 1000
    with sqlite_db.write() as s:
        assert s.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        assert int(s.execute(sa.text("PRAGMA busy_timeout")).scalar() or 0) >= 1000


def test_database_file_is_in_wal_mode_on_disk(sqlite_db: Database, tmp_path: Path) -> None:
    import sqlite3

    sqlite_db.migrate()
    conn = sqlite3.connect(tmp_path / "m.db")
    try:
        # journal_mode=WAL is persistent: a plain connection (no pragmas of ours) sees it too.
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        conn.close()


# --- PostgreSQL: the database-wide write lock -------------------------------------------------------


@pytest.fixture
def pg_db() -> Iterator[Database]:
    if POSTGRESQL not in selected_backends():
        skip_or_fail(f"{BACKENDS_ENV} leaves PostgreSQL out")
    require_backend(POSTGRESQL)
    url = create_database()
    database = Database(url)
    yield database
    database.dispose()
    drop_database(url)


def test_postgresql_writes_hold_the_advisory_lock_until_commit(pg_db: Database) -> None:
    db = pg_db
    db.migrate()
    lock_query = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND ((classid::bigint << 32) | objid::bigint) = :k"
        # Advisory locks are per database; other tests' servers hold the same key in theirs.
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with db.write() as s:
        with db.read() as other:
            assert other.execute(lock_query, {"k": WRITE_LOCK_KEY}).scalar() == 1
        # A second writer waits for it: try-lock from another connection fails while we hold it.
        with db.write_engine.connect() as conn:
            assert (
                conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_KEY}).scalar()
                is False
            )
        s.execute(sa.text("SELECT 1"))
    with db.read() as other:
        assert other.execute(lock_query, {"k": WRITE_LOCK_KEY}).scalar() == 0
