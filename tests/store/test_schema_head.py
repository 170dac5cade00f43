"""The server skips alembic when the schema is current (fetchml.store.schemahead): its reading of
the migration scripts must name alembic's own head, and it must say "not at head" whenever
alembic has work to do."""

from __future__ import annotations

from fetchml.store.db import Database
from fetchml.store.migrate import downgrade_to, head_revision, upgrade_to_head
from fetchml.store.schemahead import at_head, script_head


def test_the_scripts_head_is_alembics(db: Database) -> None:
    assert script_head() is not None
    assert script_head() == head_revision(db.write_engine)


def test_at_head_only_when_alembic_has_nothing_to_do(db: Database) -> None:
    assert not at_head(db.write_engine)  # no version table yet
    upgrade_to_head(db.write_engine)
    assert at_head(db.write_engine)
    downgrade_to(db.write_engine, "-1")
    assert not at_head(db.write_engine)
    db.migrate()  # the fast path says no: alembic upgrades
    assert at_head(db.write_engine)
