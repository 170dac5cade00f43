from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Session-level advisory lock taken around migrations on PostgreSQL ("FMLMIG"): servers started
# together on one database take turns instead of creating the same tables twice.
MIGRATE_LOCK_KEY = 0x46_4D_4C_4D_49_47
# alembic's `context` is module-global: one migration at a time per process, too.
_process_lock = threading.Lock()
log = logging.getLogger("fetchml.store")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, one migrating process at a time; SQLite's DDL already runs under its
    database-wide write lock."""
    with _process_lock:
        if engine.dialect.name != "postgresql":
            yield
            return
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATE_LOCK_KEY})
                conn.commit()


def upgrade_to_head(engine: Engine) -> None:
    head = head_revision(engine)
    if current_revision(engine) == head:
        return
    with _migration_lock(engine):
        current = current_revision(engine)
        if current == head:  # another process migrated while we waited
            return
        command.upgrade(alembic_config(engine), "head")
    # One line of ours instead of alembic's (fetchml.server.main keeps those at WARNING).
    log.info("database schema %s", f"upgraded from {current} to {head}" if current else f"created at {head}")


def downgrade_to(engine: Engine, revision: str) -> None:
    with _migration_lock(engine):
        command.downgrade(alembic_config(engine), revision)
