"""alembic migrations build exactly the SQLModel schema; connections get the pragmas we rely on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

import fetchml.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from fetchml.store.db import Database
from fetchml.store.migrate import current_revision, downgrade_to, head_revision, upgrade_to_head

APP_TABLES = {"tasks", "experiments", "api_keys", "audit_events"}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'm.db'}")
    yield database
    database.dispose()


def schema_sql(engine: sa.Engine) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def diff_against(engine: sa.Engine, metadata: sa.MetaData) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, metadata))


def test_upgrade_head_on_empty_database_matches_the_models(db: Database) -> None:
    assert current_revision(db.write_engine) is None
    upgrade_to_head(db.write_engine)
    assert current_revision(db.write_engine) == head_revision(db.write_engine)
    tables = {name for kind, name, _ in schema_sql(db.write_engine) if kind == "table"}
    assert tables >= APP_TABLES
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
    first = schema_sql(db.write_engine)
    assert {name for _, name, _ in first} >= APP_TABLES

    downgrade_to(db.write_engine, "base")
    left = {name for kind, name, _ in schema_sql(db.write_engine) if kind == "table"}
    assert left & APP_TABLES == set()
    assert current_revision(db.write_engine) is None

    upgrade_to_head(db.write_engine)
    assert schema_sql(db.write_engine) == first
    assert diff_against(db.write_engine, SQLModel.metadata) == []


def test_migrate_is_idempotent(db: Database) -> None:
    db.migrate()
    before = schema_sql(db.write_engine)
    db.migrate()
    upgrade_to_head(db.write_engine)
    assert schema_sql(db.write_engine) == before


@pytest.mark.parametrize("which", ["read_engine", "write_engine"])
def test_connections_use_wal_foreign_keys_and_busy_timeout(db: Database, which: str) -> None:
    db.migrate()
    engine: sa.Engine = getattr(db, which)
    with engine.connect() as conn:
        assert str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000


def test_sessions_have_the_pragmas_too(db: Database) -> None:
    db.migrate()
    with db.read() as s:
        assert s.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        assert int(s.execute(sa.text("PRAGMA busy_timeout")).scalar() or 0) >= 1000
    with db.write() as s:
        assert s.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
        assert int(s.execute(sa.text("PRAGMA busy_timeout")).scalar() or 0) >= 1000


def test_database_file_is_in_wal_mode_on_disk(db: Database, tmp_path: Path) -> None:
    import sqlite3

    db.migrate()
    conn = sqlite3.connect(tmp_path / "m.db")
    try:
        # journal_mode=WAL is persistent: a plain connection (no pragmas of ours) sees it too.
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        conn.close()
