"""Fast reads of the audit chain for verification: raw DBAPI cursors in batches, no ORM.

`scan_range` checks one range of sequence numbers with the core's fast hashing; the caller
stitches the ranges together. `python -m fetchml.store.auditscan` runs it in a worker process:
for SQLite that imports nothing but orjson (fetchml.core.audit, with pydantic and cryptography,
only when a row needs the reference hash), so a worker starts in a few tens of milliseconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from fetchml.core.audit import FastRow, RangeCheck

BATCH = 20_000  # PostgreSQL: rows per round trip of the server-side cursor
# SQLite: rows per fetchmany. Small batches keep the row tuples in the CPU caches while they are
# hashed (20,000 rows of 12 objects each cost ~25% more per row than 1,000).
SQLITE_BATCH = 1000
# Distinct metadata texts whose canonical encoding is remembered (the server writes many events
# with the same small metadata: {}, {"attempt": 1, ...}); past this, new texts are not added.
META_CACHE = 4096
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
    from fetchml.core.audit import event_hash

    seq, prev, _, body = row
    ts = body["timestamp"]
    try:
        when = datetime.fromisoformat(ts.removesuffix("Z").replace("T", " ")).replace(tzinfo=UTC)
        return event_hash(prev, {**body, "timestamp": when, "sequence_num": seq})
    except (TypeError, ValueError, UnicodeEncodeError):
        return None


def scan_range(url: str, lo: int, hi: int) -> RangeCheck:
    """Check events lo..hi (inclusive) as stored in the database at `url` (SQLAlchemy URL)."""
    from fetchml.core.audit import RangeCheck, check_rows

    if url.startswith("sqlite"):
        return RangeCheck(**_scan_sqlite(url, lo, hi))
    return check_rows(_pg_rows(url, lo, hi), _reference)


def _scan_sqlite(url: str, lo: int, hi: int) -> dict[str, Any]:
    """check_rows over the raw SQLite rows (RangeCheck's fields, as a dict), fused into one loop:
    at a million rows every Python object per row counts.

    Each batch of rows is first checked the fast way: its sequence numbers contiguous (they are
    the primary key, so ascending and unique: last - first + 1 == len), every prev_hash equal to
    the event hash before it, and every row's fast hash equal to its event_hash (or, where the
    fast encoding disagrees, the reference hash). A batch that fails any of that is walked again
    by _check_batch, which names the first bad sequence number and why, as check_rows would."""
    import sqlite3

    sha256, loads, dumps, fragment = hashlib.sha256, orjson.loads, orjson.dumps, orjson.Fragment
    sort = orjson.OPT_SORT_KEYS
    # metadata text -> its canonical encoding, embedded as is in the event's (whose keys are
    # written below in sorted order, so the outer dict needs no sorting).
    metas: dict[str | None, orjson.Fragment] = {}
    count = 0
    first_seq: int | None = None
    first_prev: str | None = None
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
        while batch := cur.fetchmany(SQLITE_BATCH):
            count += len(batch)
            if bad is not None:
                continue  # every row is still counted, as check_rows counts them
            head = batch[0]
            if last_seq is None:
                first_seq, first_prev, last_hash = head[0], head[10], head[10]
            elif head[0] != last_seq + 1:
                last_seq, last_hash, bad, reason = _check_batch(batch, last_seq, last_hash)
                continue
            if batch[-1][0] - head[0] != len(batch) - 1:
                last_seq, last_hash, bad, reason = _check_batch(batch, last_seq, last_hash)
                continue
            link = last_hash
            for seq, ts, et, user, rs, act, ok, ip, err, meta, prev, digest in batch:
                if prev != link:
                    break
                try:
                    m = metas.get(meta)
                    if m is None:
                        m = fragment(dumps({} if meta is None else loads(meta), option=sort))
                        if len(metas) < META_CACHE:
                            metas[meta] = m
                    body = {
                        "action": act,
                        "error": err,
                        "event_type": et,
                        "ip_address": ip,
                        "metadata": m,
                        "resource": rs,
                        "sequence_num": seq,
                        "success": ok == 1,
                        "timestamp": f"{ts[:10]}T{ts[11:]}Z" if len(ts) == 26 else ts,
                        "user_id": user,
                    }
                    good = sha256(prev.encode() + dumps(body)).hexdigest() == digest
                except (TypeError, ValueError, AttributeError):
                    good = False
                if not good and _reference_raw(seq, ts, et, user, rs, act, ok, ip, err, meta, prev) != digest:
                    break
                link = digest
            else:
                last_seq, last_hash = batch[-1][0], link
                continue
            last_seq, last_hash, bad, reason = _check_batch(batch, last_seq, last_hash)
    finally:
        conn.close()
    return {
        "count": count,
        "first_seq": first_seq,
        "first_prev": first_prev,
        "last_seq": last_seq,
        "last_hash": last_hash or None,
        "bad_seq": bad,
        "reason": reason,
    }


def _check_batch(
    batch: list[Any], last_seq: int | None, last_hash: str
) -> tuple[int | None, str, int | None, str | None]:
    """Walk one batch row by row from the state before it (last_seq None: the batch opens the
    range, its first row is not linked here). Returns (last_seq, last_hash, bad_seq, reason)
    after the batch, or at its first bad row."""
    sha256, loads, dumps, sort = hashlib.sha256, orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
    for seq, ts, et, user, rs, act, ok, ip, err, meta, prev, digest in batch:
        if last_seq is not None:
            if seq != last_seq + 1:
                return (
                    last_seq,
                    last_hash,
                    last_seq + 1,
                    f"sequence gap: expected {last_seq + 1}, found {seq}",
                )
            if prev != last_hash:
                return last_seq, last_hash, seq, "prev_hash does not link to the previous event"
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
        except (TypeError, ValueError, AttributeError):
            good = False
        if not good and _reference_raw(seq, ts, et, user, rs, act, ok, ip, err, meta, prev) != digest:
            return last_seq, last_hash, seq, "event content does not match its hash"
        last_seq, last_hash = seq, digest
    return last_seq, last_hash, None, None


def _reference_raw(*row: Any) -> str | None:
    """The reference hash of one raw SQLite row, read the way the ORM reads it."""
    import json

    from fetchml.core.audit import event_hash

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
    argv: the URL may hold a password), the RangeCheck's fields as JSON on stdout."""
    import dataclasses
    import sys

    job = orjson.loads(sys.stdin.buffer.read())
    url, lo, hi = job["url"], int(job["lo"]), int(job["hi"])
    # SQLite: the dict straight from the scan, without importing fetchml.core.audit at all.
    result = (
        _scan_sqlite(url, lo, hi) if url.startswith("sqlite") else dataclasses.asdict(scan_range(url, lo, hi))
    )
    sys.stdout.buffer.write(orjson.dumps(result))


if __name__ == "__main__":
    _main()
