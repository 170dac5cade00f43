"""Fast reads of the audit chain for verification: raw DBAPI cursors in large batches, no ORM.

`scan_range` runs in a worker process (it imports nothing heavy) and checks one range of
sequence numbers with the core's fast hashing; the caller stitches the ranges together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from fetchml.core.audit import FastRow, RangeCheck, check_rows, event_hash

BATCH = 20_000
_COLUMNS = (
    "sequence_num, timestamp, event_type, user_id, resource, action, success, ip_address, error, "
    "{metadata}, prev_hash, event_hash"
)


def _sqlite_uri(url: str) -> str:
    """A read-only sqlite3 URI for a SQLAlchemy URL (sqlite:///relative, sqlite:////absolute)."""
    from urllib.parse import quote

    return f"file:{quote(url.split('///', 1)[1].split('?', 1)[0])}?mode=ro"


def _libpq_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


def _pg_rows(url: str, lo: int, hi: int) -> Iterator[FastRow]:
    import psycopg

    # A server-side cursor: the range streams in batches instead of landing in memory at once.
    with (
        psycopg.connect(_libpq_url(url)) as conn,
        conn.transaction(),
        conn.cursor(name="fetchml_audit_scan") as cur,
    ):
        cur.itersize = BATCH
        cur.execute(
            f"SELECT {_COLUMNS.format(metadata='metadata::text')} FROM audit_events "
            "WHERE sequence_num BETWEEN %s AND %s ORDER BY sequence_num",
            (lo, hi),
        )
        loads = orjson.loads
        for seq, ts, et, user, res, act, ok, ip, err, meta, prev, digest in cur:
            body = {
                "action": act,
                "error": err,
                "event_type": et,
                "ip_address": ip,
                "metadata": {} if meta is None else loads(meta),
                "resource": res,
                "sequence_num": seq,
                "success": ok,
                "timestamp": ts.isoformat(timespec="microseconds") + "Z",  # naive UTC
                "user_id": user,
            }
            yield seq, prev, digest, body


def _reference(row: FastRow) -> str | None:
    """The exact (json-module) hash of a row the fast encoding disagreed with, its timestamp
    read the way the ORM reads it."""
    seq, prev, _, body = row
    ts = body["timestamp"]
    try:
        when = datetime.fromisoformat(ts.removesuffix("Z").replace("T", " ")).replace(tzinfo=UTC)
        return event_hash(prev, {**body, "timestamp": when, "sequence_num": seq})
    except (TypeError, ValueError, UnicodeEncodeError):
        return None


def scan_range(url: str, lo: int, hi: int) -> RangeCheck:
    """Check events lo..hi (inclusive) as stored in the database at `url` (SQLAlchemy URL)."""
    if url.startswith("sqlite"):
        return _scan_sqlite(url, lo, hi)
    return check_rows(_pg_rows(url, lo, hi), _reference)


def _scan_sqlite(url: str, lo: int, hi: int) -> RangeCheck:
    """check_rows over _sqlite_rows, fused into one loop: at a million rows the generator and
    the tuples between them cost as much as the hashing."""
    import sqlite3

    sha256, loads, dumps, sort = hashlib.sha256, orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
    res = RangeCheck()
    count = 0
    last_seq: int | None = None
    last_hash = ""
    bad: int | None = None
    reason: str | None = None
    conn = sqlite3.connect(_sqlite_uri(url), uri=True, timeout=30)
    try:
        cur = conn.execute(
            f"SELECT {_COLUMNS.format(metadata='metadata')} FROM audit_events "
            "WHERE sequence_num BETWEEN ? AND ? ORDER BY sequence_num",
            (lo, hi),
        )
        while batch := cur.fetchmany(BATCH):
            count += len(batch)
            if bad is not None:
                continue
            for seq, ts, et, user, rs, act, ok, ip, err, meta, prev, digest in batch:
                if last_seq is None:
                    res.first_seq, res.first_prev = seq, prev
                elif seq != last_seq + 1:
                    bad, reason = last_seq + 1, f"sequence gap: expected {last_seq + 1}, found {seq}"
                    break
                elif prev != last_hash:
                    bad, reason = seq, "prev_hash does not link to the previous event"
                    break
                try:
                    body = {
                        "action": act,
                        "error": err,
                        "event_type": et,
                        "ip_address": ip,
                        "metadata": {} if meta is None else loads(meta),
                        "resource": rs,
                        "sequence_num": seq,
                        "success": ok == 1,
                        "timestamp": f"{ts[:10]}T{ts[11:]}Z" if len(ts) == 26 else ts,
                        "user_id": user,
                    }
                    good = sha256(prev.encode() + dumps(body, option=sort)).hexdigest() == digest
                except (TypeError, ValueError):
                    good = False
                if not good and _reference_raw(seq, ts, et, user, rs, act, ok, ip, err, meta, prev) != digest:
                    bad, reason = seq, "event content does not match its hash"
                    break
                last_seq, last_hash = seq, digest
    finally:
        conn.close()
    res.count = count
    res.last_seq, res.last_hash = last_seq, (last_hash or None)
    res.bad_seq, res.reason = bad, reason
    return res


def _reference_raw(*row: Any) -> str | None:
    """The reference hash of one raw SQLite row, read the way the ORM reads it."""
    seq, ts, et, user, rs, act, ok, ip, err, meta, prev = row
    try:
        fields = {
            "sequence_num": seq,
            "timestamp": datetime.fromisoformat(ts).replace(tzinfo=UTC),
            "event_type": et,
            "user_id": user,
            "resource": rs,
            "action": act,
            "success": bool(ok),
            "ip_address": ip,
            "error": err,
            "metadata": None if meta is None else json.loads(meta),
        }
        return event_hash(prev, fields)
    except (TypeError, ValueError, UnicodeEncodeError):
        return None


def checkpoint_rows(url: str) -> Iterator[tuple[int, str, datetime, str, str, str | None]]:
    """Every checkpoint in sequence order with the event hash stored at its sequence number
    (None where that event is missing)."""
    sql = (
        "SELECT c.sequence_num, c.root, c.created_at, c.key_id, c.signature, e.event_hash "
        "FROM audit_checkpoints c LEFT JOIN audit_events e ON e.sequence_num = c.sequence_num "
        "ORDER BY c.sequence_num"
    )
    if url.startswith("sqlite"):
        import sqlite3

        lite = sqlite3.connect(_sqlite_uri(url), uri=True, timeout=30)
        try:
            rows = lite.execute(sql)
            while batch := rows.fetchmany(BATCH):
                for seq, root, created, key_id, sig, ev in batch:
                    yield seq, root, datetime.fromisoformat(created).replace(tzinfo=UTC), key_id, sig, ev
        finally:
            lite.close()
        return
    import psycopg

    with (
        psycopg.connect(_libpq_url(url)) as conn,
        conn.transaction(),
        conn.cursor(name="fetchml_checkpoint_scan") as cur,
    ):
        cur.itersize = BATCH
        cur.execute(sql)
        for seq, root, created, key_id, sig, ev in cur:
            yield seq, root, created.replace(tzinfo=UTC), key_id, sig, ev


def _main() -> None:
    """`python -m fetchml.store.auditscan`: one range, {"url", "lo", "hi"} as JSON on stdin (not
    argv: the URL may hold a password), the RangeCheck as JSON on stdout."""
    import dataclasses
    import sys

    job = json.loads(sys.stdin.read())
    result = scan_range(job["url"], int(job["lo"]), int(job["hi"]))
    sys.stdout.write(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    _main()
