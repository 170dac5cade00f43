"""audit_blocks, the audit log's zone map (migration 0011): its triggers keep it exact under any
insert, update and delete of audit_events, and the list queries built on it
(fetchml.services.auditquery) give exactly the plain query's totals and pages."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from fetchml.services import auditquery
from fetchml.services.auditquery import BLOCK, EventFilter, page
from fetchml.store.db import Database
from fetchml.store.migrations.versions import __path__ as versions_path
from fetchml.store.tables import AuditBlockRow, AuditEventRow
from tests.backends import POSTGRESQL, create_database, drop_database

EVENTS = 3 * BLOCK + 777
TYPES = ("job_queued", "job_started", "file_access", "auth_attempt", "job_cancelled", "key_created")
USERS = ("alice", "bob", "carol", None)
BASE = datetime(2026, 6, 1, tzinfo=UTC)
EV = AuditEventRow.__table__  # type: ignore[attr-defined]
ZONE = AuditBlockRow.__table__  # type: ignore[attr-defined]


def _event(seq: int, rng: random.Random) -> dict[str, Any]:
    when = BASE + timedelta(seconds=seq)
    if rng.random() < 0.01:  # a writer whose clock was behind: out of sequence order
        when -= timedelta(hours=rng.choice([1, 2, 30]))
    return {
        "sequence_num": seq,
        "timestamp": when,
        "event_type": rng.choices(TYPES, [30, 20, 30, 15, 3, 2])[0],
        "user_id": rng.choice(USERS),
        "resource": f"task:{seq}",
        "action": "x",
        "success": True,
        "ip_address": None,
        "error": None,
        "metadata": {},
        "prev_hash": "0" * 64,
        "event_hash": f"{seq:064x}",
    }


@pytest.fixture(scope="module")
def db(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    url = (
        create_database()
        if backend == POSTGRESQL
        else f"sqlite:///{tmp_path_factory.mktemp('blocks') / 'a.db'}"
    )
    database = Database(url)
    database.migrate()
    rng = random.Random(11)
    with database.write() as session:
        session.connection().execute(EV.insert(), [_event(s, rng) for s in range(1, EVENTS + 1)])
    yield database
    database.dispose()
    if backend == POSTGRESQL:
        drop_database(url)


def zone_matches_events(database: Database) -> None:
    """Counts equal to the events' own, bounds around their timestamps."""
    with database.read() as session:
        zone = {
            (int(b), t): (int(n), lo, hi)
            for b, t, n, lo, hi in session.execute(
                sa.select(ZONE.c.block_no, ZONE.c.event_type, ZONE.c.events, ZONE.c.first_at, ZONE.c.last_at)
            )
        }
        events: dict[tuple[int, str], list[datetime]] = {}
        for seq, etype, ts in session.execute(sa.select(EV.c.sequence_num, EV.c.event_type, EV.c.timestamp)):
            events.setdefault((int(seq) // BLOCK, etype), []).append(ts)
    counted = {k: v[0] for k, v in zone.items() if v[0]}
    assert counted == {k: len(v) for k, v in events.items()}
    for key, stamps in events.items():
        _, lo, hi = zone[key]
        assert lo <= min(stamps) and hi >= max(stamps), key


def test_the_migration_and_the_queries_agree_on_the_block_size() -> None:
    text = (Path(versions_path[0]) / "0011_list_indexes.py").read_text()
    assert f"BLOCK = {BLOCK}\n" in text


def test_the_zone_map_follows_inserts_updates_and_deletes(db: Database) -> None:
    zone_matches_events(db)
    with db.write() as session:
        conn = session.connection()
        conn.execute(EV.update().where(EV.c.sequence_num == 10).values(event_type="key_revoked"))
        conn.execute(EV.update().where(EV.c.sequence_num == 20).values(timestamp=BASE + timedelta(days=400)))
        conn.execute(EV.update().where(EV.c.sequence_num == 30).values(sequence_num=EVENTS + 5000))
        conn.execute(EV.delete().where(EV.c.sequence_num.between(BLOCK - 5, BLOCK + 5)))
    zone_matches_events(db)
    with db.write() as session:  # put them back for the other tests
        conn = session.connection()
        rng = random.Random(11)
        originals = {s: _event(s, rng) for s in range(1, EVENTS + 1)}
        conn.execute(EV.delete().where(EV.c.sequence_num.in_([10, 20, EVENTS + 5000])))
        conn.execute(EV.insert(), [originals[s] for s in (10, 20, 30, *range(BLOCK - 5, BLOCK + 6))])
    zone_matches_events(db)


def plain(session: Any, f: EventFilter, limit: int, offset: int) -> tuple[int, list[int]]:
    conds = auditquery._conds(f)
    order = EV.c.sequence_num.asc() if f.after_seq is not None else EV.c.sequence_num.desc()
    total = session.scalar(sa.select(sa.func.count()).select_from(EV).where(*conds))
    keys = session.scalars(
        sa.select(EV.c.sequence_num).where(*conds).order_by(order).limit(limit).offset(offset)
    )
    return int(total or 0), list(keys)


def at(seq: int) -> datetime:
    return BASE + timedelta(seconds=seq)


FILTERS = [
    EventFilter(),
    EventFilter(types=("job_queued", "job_started", "file_access", "auth_attempt")),
    EventFilter(types=("job_cancelled",)),
    EventFilter(types=()),
    EventFilter(user_id="alice"),
    EventFilter(user_id="alice", types=("job_queued", "file_access")),
    EventFilter(user_id="bob", types=("auth_attempt",)),
    EventFilter(start=at(BLOCK + 100)),
    EventFilter(end=at(2 * BLOCK - 7)),
    EventFilter(start=at(300), end=at(3 * BLOCK + 10)),
    EventFilter(start=at(BLOCK), end=at(BLOCK + 50), types=("file_access",)),
    EventFilter(start=at(EVENTS + 10)),  # after the newest
    EventFilter(end=at(-5 * 3600)),  # before the oldest skewed one
    EventFilter(start=at(2 * BLOCK), user_id="carol"),
    EventFilter(start=at(100), end=at(BLOCK * 2), user_id="alice", types=("job_queued", "auth_attempt")),
    EventFilter(after_seq=0),
    EventFilter(after_seq=BLOCK - 1),
    EventFilter(after_seq=2 * BLOCK + 3, types=("job_queued", "file_access")),
    EventFilter(after_seq=BLOCK + 9, user_id="bob"),
    EventFilter(after_seq=100, start=at(BLOCK), end=at(2 * BLOCK + 500)),
    EventFilter(after_seq=EVENTS),
]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: repr(f)[12:-1] or "none")
def test_totals_and_pages_equal_the_plain_query(db: Database, f: EventFilter) -> None:
    with db.read() as session:
        total, _ = plain(session, f, 1, 0)
        for limit, offset in [
            (100, 0),
            (1, 1),
            (1000, BLOCK - 3),
            (50, BLOCK),
            (7, total - 3),
            (10, total),
            (10, total + 5),
        ]:
            if offset < 0:
                continue
            got = page(session, f, limit=limit, offset=offset)
            keys = list(session.scalars(got.keys)) if got.keys is not None else []
            assert (got.total, keys) == plain(session, f, limit, offset), (limit, offset)
