"""The SQLite scan of the audit chain (fetchml.store.auditscan) on a real database written by the
server's own write path: valid as written, and exactly the reference's verdict (the same first
bad sequence number) after any single column of any one row is edited."""

from __future__ import annotations

import itertools
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fetchml.core.audit import ChainCheck, event_hash, stitch
from fetchml.core.enums import AuditEventType
from fetchml.services.audit import _row_fields, _walk_orm
from fetchml.services.write_queue import Tx, run_write
from fetchml.store import auditscan
from fetchml.store.auditscan import scan_range
from fetchml.store.db import Database
from fetchml.store.tables import AuditEventRow

TYPES = (AuditEventType.JOB_QUEUED, AuditEventType.AUTH_ATTEMPT, AuditEventType.AUDIT_VERIFIED)
NASTY = (
    "plain",
    "ünïcødé ✓ 日本語 🚀",
    'quote " and backslash \\ and slash /',
    "controls \x00\x01\x07\x08\t\n\x0b\x0c\r\x1b\x1f\x7f end",
    "\u2028\u2029 line separators",
    "",
)
METAS: tuple[dict[str, Any] | None, ...] = (
    None,
    {},
    {"attempt": 1, "retry_count": 0},  # repeated: the scan caches its encoding
    {"z": 1, "a": {"y": [1, 2, {"b": None, "a": True}], "x": 'ü\n"\\'}, "m": [], "é": "é"},
    {"big": 2**63 - 1, "neg": -(2**63), "huge": 2**70, "f": 0.1, "tiny": 1e-07, "exp": 1e22, "neg0": -0.0},
    {"attempt": 1, "retry_count": 0},
    {"nested": {"deeper": {"deepest": ["\x00", "\u00ff", "\U0001f600"]}}, "n": None},
)
N = 40


def _event(i: int) -> dict[str, Any]:
    text = NASTY[i % len(NASTY)]
    return {
        "event_type": TYPES[i % len(TYPES)],
        "user_id": None if i % 5 == 0 else f"user{i} {text}",
        "resource": None if i % 7 == 3 else f"task:{i}/{text}",
        "action": None if i % 4 == 1 else text,
        "success": i % 3 != 0,
        "ip_address": None if i % 2 else "10.0.0.7",
        "error": None if i % 3 else f"failed: {text}",
        "metadata": METAS[i % len(METAS)],
    }


@pytest.fixture(scope="module")
def chain_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auditscan") / "fetchml.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    for i in range(N):

        def op(tx: Tx, i: int = i) -> None:
            tx.audit(**_event(i))

        run_write(db, op)
    db.dispose()
    return path


@pytest.fixture(params=[1000, 7], ids=["batch1000", "batch7"])
def batch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The default batch, and one small enough that edits land at batch starts, ends and middles;
    with a two-entry metadata cache, so that it fills up."""
    monkeypatch.setattr(auditscan, "SQLITE_BATCH", request.param)
    if request.param == 7:
        monkeypatch.setattr(auditscan, "META_CACHE", 2)
    yield request.param


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


Verdict = tuple[bool, int, int | None, str | None, str | None]


def _verdict(check: ChainCheck) -> Verdict:
    """What the server reports: the root hash only for a valid chain."""
    root = check.root_hash if check.valid else None
    return check.valid, check.total_events, check.first_tampered, check.reason, root


def _reference(path: Path) -> Verdict:
    db = Database(_url(path))
    try:
        with db.read() as session:
            return _verdict(_walk_orm(session))
    finally:
        db.dispose()


def _fast(path: Path, *cuts: int) -> Verdict:
    """scan_range over [1, 100000] cut into ranges at `cuts`, stitched, as the server does."""
    bounds = [1, *cuts, 100_001]
    return _verdict(stitch(scan_range(_url(path), a, b - 1) for a, b in itertools.pairwise(bounds)))


def test_scan_of_a_written_chain_is_valid(chain_db: Path, batch: int) -> None:
    ref = _reference(chain_db)
    assert ref[:3] == (True, N, None)
    assert _fast(chain_db) == ref
    assert _fast(chain_db, 8, 9, 23) == ref
    with sqlite3.connect(chain_db) as conn:
        ((metas,),) = conn.execute("SELECT count(DISTINCT metadata) FROM audit_events").fetchall()
    assert metas >= 5


def _flip_hex(v: str) -> str:
    return ("1" if v[0] == "0" else "0") + v[1:]


def _later(ts: str) -> str:
    return (datetime.fromisoformat(ts) + timedelta(microseconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")


def _text(v: str | None) -> str:
    return "x" if v is None else v + "x"


EDITS: dict[str, Callable[[Any], Any]] = {
    "timestamp": _later,
    "event_type": lambda v: "job_started" if v != "job_started" else "job_queued",
    "user_id": _text,
    "resource": _text,
    "action": _text,
    "success": lambda v: 1 - v,
    "ip_address": lambda v: "10.0.0.8" if v else "10.0.0.7",
    "error": _text,
    "metadata": lambda v: json.dumps({**json.loads(v), "tampered": "ü"}),
    "prev_hash": _flip_hex,
    "event_hash": _flip_hex,
    "sequence_num": lambda v: v + 10_000,  # the row moves away: a gap where it was
}


def _rehash(path: Path, seq: int) -> str:
    """Give the event at seq the hash of its (edited) content, as a forger would."""
    db = Database(_url(path))
    try:
        with db.read() as session:
            row = session.get(AuditEventRow, seq)
            assert row is not None
            digest = event_hash(row.prev_hash, _row_fields(row))
    finally:
        db.dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE audit_events SET event_hash = ? WHERE sequence_num = ?", (digest, seq))
    conn.close()
    return digest


def _check_all_cuts(path: Path, victim: int) -> Verdict:
    ref = _reference(path)
    assert _fast(path) == ref
    assert _fast(path, victim) == ref
    assert _fast(path, victim + 1) == ref
    assert _fast(path, 8, 20) == ref
    return ref


@pytest.mark.parametrize("column", list(EDITS))
@pytest.mark.parametrize("victim", [1, 7, 8, 9, 22, N])
@pytest.mark.parametrize("forged", [False, True], ids=["edited", "rehashed"])
def test_any_single_edit_is_found_at_its_row(
    chain_db: Path, tmp_path: Path, batch: int, column: str, victim: int, forged: bool
) -> None:
    """Edited: the row's own hash no longer matches. Rehashed: it does, so the break shows in
    the link from the next row (or, for a moved or relinked row, at the row itself)."""
    copy = tmp_path / "edited.db"
    shutil.copyfile(chain_db, copy)
    with sqlite3.connect(copy) as conn:
        ((old,),) = conn.execute(f"SELECT {column} FROM audit_events WHERE sequence_num = ?", (victim,))
        conn.execute(
            f"UPDATE audit_events SET {column} = ? WHERE sequence_num = ?", (EDITS[column](old), victim)
        )
    conn.close()
    moved = column == "sequence_num"
    if forged:
        _rehash(copy, victim + 10_000 if moved else victim)
    ref = _check_all_cuts(copy, victim)
    # Moved: a gap where it was (after the last row: one past the old end). Rehashing an edited
    # event_hash undoes the edit; a forged last row has nothing after it to tell (checkpoints do).
    expected: tuple[bool, int, int | None]
    if moved or not forged or column == "prev_hash":
        expected = (False, N, victim)
    elif column == "event_hash" or victim == N:
        expected = (True, N, None)
    else:
        expected = (False, N, victim + 1)
    assert ref[:3] == expected, ref


@pytest.mark.parametrize("victim", [2, 7, 8, 9, 15, 22, N - 1])
def test_a_relinked_gap_is_a_gap(chain_db: Path, tmp_path: Path, batch: int, victim: int) -> None:
    """Row victim deleted and every later row relinked and rehashed, as a forger would: every
    link and every hash holds, the gap alone is wrong (at a batch's start, middle or end)."""
    copy = tmp_path / "gap.db"
    shutil.copyfile(chain_db, copy)
    with sqlite3.connect(copy) as conn:
        ((prev,),) = conn.execute("SELECT event_hash FROM audit_events WHERE sequence_num = ?", (victim - 1,))
        conn.execute("DELETE FROM audit_events WHERE sequence_num = ?", (victim,))
    conn.close()
    for seq in range(victim + 1, N + 1):
        with sqlite3.connect(copy) as conn:
            conn.execute("UPDATE audit_events SET prev_hash = ? WHERE sequence_num = ?", (prev, seq))
        conn.close()
        prev = _rehash(copy, seq)
    ref = _check_all_cuts(copy, victim)
    assert ref[:3] == (False, N - 1, victim) and "gap" in (ref[3] or ""), ref


def test_equivalent_metadata_text_is_not_an_edit(chain_db: Path, tmp_path: Path, batch: int) -> None:
    """Metadata stored in another JSON spelling (key order, spaces, escapes) hashes the same: the
    reference says valid, so must the scan."""
    copy = tmp_path / "respelled.db"
    shutil.copyfile(chain_db, copy)
    with sqlite3.connect(copy) as conn:
        rows = conn.execute("SELECT sequence_num, metadata FROM audit_events").fetchall()
        for seq, meta in rows:
            value = json.loads(meta)
            respelled = json.dumps(dict(reversed(list(value.items()))), ensure_ascii=False, indent=1)
            conn.execute("UPDATE audit_events SET metadata = ? WHERE sequence_num = ?", (respelled, seq))
    conn.close()
    ref = _reference(copy)
    assert ref[:3] == (True, N, None)
    assert _fast(copy) == ref
    assert _fast(copy, 8) == ref
