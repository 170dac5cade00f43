"""The audit export file and its offline verifier: reads and writes files, and checks them in
parallel processes. No server, no database.

Format `fetchml-audit-export/v1`: JSON Lines, UTF-8, one object per line, each with a "kind":

- ``{"kind": "header", "format": "fetchml-audit-export/v1", "exported_at": ...}`` (first line;
  informational, not signed);
- ``{"kind": "event", <the hashed fields, timestamp as RFC 3339 UTC with microseconds and Z>,
  "prev_hash": ..., "event_hash": ...}`` in sequence order;
- ``{"kind": "checkpoint", "sequence_num", "root", "created_at", "key_id", "signature"}`` right
  after the event it covers. A checkpoint past the last event (the database lost its tail) is
  written at the end, where the verifier reports it as a truncated tail.

Verification splits the file into byte ranges checked in parallel processes: every event can be
hashed on its own, and the links between ranges are stitched afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fetchml.core.audit import (
    GENESIS_HASH,
    CheckpointedVerification,
    FastRow,
    RangeCheck,
    canonical_json,
    checkpoint_signature_ok,
    key_id_of,
    reference_hash,
    stitch,
)
from fetchml.core.timeutil import rfc3339, utcnow

EXPORT_FORMAT = "fetchml-audit-export/v1"
_SORTED = orjson.OPT_SORT_KEYS
# Below this a file is checked in-process: starting workers would cost more than it saves.
PARALLEL_MIN_BYTES = 8 << 20


def header_line(exported_at: datetime) -> bytes:
    return (
        orjson.dumps({"kind": "header", "format": EXPORT_FORMAT, "exported_at": rfc3339(exported_at)}) + b"\n"
    )


def event_line(event: dict[str, Any]) -> bytes:
    """`event`: the wire fields of one event (timestamp a datetime or its RFC 3339 string). The
    line is the event's canonical JSON (the very bytes its hash covers), with kind, prev_hash and
    event_hash appended: a verifier can hash it without parsing it."""
    canonical = canonical_json(event).encode()
    return (
        canonical[:-1]
        + _P1
        + str(event["prev_hash"]).encode()
        + _P2
        + str(event["event_hash"]).encode()
        + b'"}\n'
    )


def checkpoint_line(cp: dict[str, Any]) -> bytes:
    ts = cp["created_at"]
    return (
        orjson.dumps(
            {
                "kind": "checkpoint",
                "sequence_num": cp["sequence_num"],
                "root": cp["root"],
                "created_at": rfc3339(ts) if isinstance(ts, datetime) else ts,
                "key_id": cp["key_id"],
                "signature": cp["signature"],
            }
        )
        + b"\n"
    )


@dataclass
class _Cp:
    seq: int
    root: str
    created_at: str
    key_id: str
    signature: str
    offset: int  # byte offset of its line, to name it
    after_seq: int | None  # the event line just before it in its chunk (None: none in the chunk)
    after_hash: str | None
    events_before: int  # event lines before it in its chunk
    events_after: int = 0


@dataclass
class _Chunk:
    range: RangeCheck
    checkpoints: list[_Cp] = field(default_factory=list)
    events: int = 0
    problem: tuple[int, str] | None = None  # (byte offset, what): a line that is not ours


# An event line as event_line writes it ends with this fixed-width tail.
_P1 = b',"kind":"event","prev_hash":"'
_P2 = b'","event_hash":"'
_TAIL = len(_P1) + 64 + len(_P2) + 64 + 2
_O1 = -_TAIL
_O2 = _O1 + len(_P1)
_O3 = _O2 + 64
_O4 = _O3 + len(_P2)


def _reference(row: FastRow) -> str | None:
    seq, prev, digest, body = row
    if isinstance(body, bytes):
        try:
            body = json.loads(body)
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
    return reference_hash((seq, prev, digest, body))


def _scan(path: str, start: int, end: int) -> _Chunk:
    """Check the lines that begin in [start, end): the same checks as core.audit.check_rows, in
    one loop, because at a million lines the per-line overhead is most of the cost."""
    cps: list[_Cp] = []
    res = RangeCheck()
    sha256, loads, dumps = hashlib.sha256, orjson.loads, orjson.dumps
    last_seq: int | None = None  # the last event that checked out
    last_hash = ""
    seen_seq: int | None = None  # the last event line read, as it claims to be
    seen_hash: str | None = None
    bad: int | None = None
    reason: str | None = None
    events = 0
    problem: tuple[int, str] | None = None
    with open(path, "rb") as f:
        pos = start
        if start > 0:
            f.seek(start - 1)
            pos = start - 1 + len(f.readline())
        for line in f:
            if pos >= end:
                break
            here, pos = pos, pos + len(line)
            line = line.rstrip(b"\r\n")
            payload: bytes | None = None
            body: Any = None
            seq: Any = None
            if (
                line[:10] == b'{"action":'
                and line[-2:] == b'"}'
                and line[_O1:_O2] == _P1
                and line[_O3:_O4] == _P2
            ):
                # As the exporter writes it: the canonical bytes themselves, then the hashes.
                # Hashing those bytes as they are skips parsing; a line that fails this way is
                # parsed and judged by the reference.
                payload = line[:_O1] + b"}"
                k = payload.rfind(b'"sequence_num":') + 15
                try:
                    seq = int(payload[k : payload.index(b",", k)])
                    prev = line[_O2:_O3].decode("ascii")
                    digest = line[_O4:-2].decode("ascii")
                except ValueError:  # UnicodeDecodeError included
                    payload = None
            if payload is None:
                if not line.strip():
                    continue
                try:
                    try:
                        d = loads(line)
                    except orjson.JSONDecodeError:
                        d = json.loads(line)  # values orjson refuses (huge integers) but JSON allows
                    kind = d.get("kind")
                    if kind == "checkpoint":
                        cps.append(
                            _Cp(
                                int(d["sequence_num"]),
                                str(d["root"]),
                                str(d["created_at"]),
                                str(d["key_id"]),
                                str(d["signature"]),
                                here,
                                seen_seq,
                                seen_hash,
                                events,
                            )
                        )
                        continue
                    if kind == "header":
                        if d.get("format") != EXPORT_FORMAT:
                            raise ValueError(f"unknown format {d.get('format')!r}")
                        continue
                    if kind != "event":
                        raise ValueError(f"unknown kind {kind!r}")
                    del d["kind"]
                    prev, digest = d.pop("prev_hash"), d.pop("event_hash")
                    seq, body = d["sequence_num"], d
                    if not isinstance(seq, int) or not isinstance(prev, str) or not isinstance(digest, str):
                        raise ValueError("sequence_num, prev_hash or event_hash of the wrong type")
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    problem = (here, f"unreadable line at byte {here}: {exc}")
                    break
            # An event line.
            events += 1
            seen_seq, seen_hash = seq, digest
            if bad is not None:
                continue
            if last_seq is None:
                res.first_seq, res.first_prev = seq, prev
            elif seq != last_seq + 1:
                bad, reason = last_seq + 1, f"sequence gap: expected {last_seq + 1}, found {seq}"
                continue
            elif prev != last_hash:
                bad, reason = seq, "prev_hash does not link to the previous event"
                continue
            if payload is not None:
                ok = sha256(prev.encode() + payload).hexdigest() == digest
                row: FastRow = (seq, prev, digest, payload)
            else:
                row = (seq, prev, digest, body)
                try:
                    ok = sha256(prev.encode() + dumps(body, option=_SORTED)).hexdigest() == digest
                except (TypeError, ValueError):
                    ok = False
            if not ok and _reference(row) != digest:
                bad, reason = seq, "event content does not match its hash"
                continue
            last_seq, last_hash = seq, digest
    res.count = events
    res.last_seq, res.last_hash = last_seq, (last_hash or None)
    res.bad_seq, res.reason = bad, reason
    for cp in cps:
        cp.events_after = events - cp.events_before
    return _Chunk(res, cps, events, problem)


def _ranges(size: int, parts: int) -> list[tuple[int, int]]:
    step = -(-size // parts)
    return [(i, min(size, i + step)) for i in range(0, size, step)] or [(0, 0)]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def verify_file(
    path: Path, public_keys: list[Ed25519PublicKey], *, workers: int | None = None
) -> CheckpointedVerification:
    """Verify an export: the hash chain, then every checkpoint (known key, good signature, root
    equal to the event hash at its sequence number, no event missing below it)."""
    size = path.stat().st_size
    workers = workers or default_workers()
    if size < PARALLEL_MIN_BYTES or workers == 1:
        chunks = [_scan(str(path), 0, size)]
    else:
        import multiprocessing

        method = "fork" if sys.platform.startswith("linux") else "spawn"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            spans = _ranges(size, workers * 2)
            chunks = list(pool.map(_scan, [str(path)] * len(spans), *zip(*spans, strict=True)))

    keys = {key_id_of(k): k for k in public_keys}
    verified_at = utcnow()
    for chunk in chunks:
        if chunk.problem is not None:
            return _result(False, chunks, None, chunk.problem[1], verified_at)
    chain = stitch(c.range for c in chunks)

    # Resolve each checkpoint's preceding event across chunk boundaries, then judge them in order.
    prev_seq: int | None = None
    prev_hash: str | None = None
    later_events = [sum(c.events for c in chunks[i + 1 :]) for i in range(len(chunks))]
    checked = 0
    last_cp_seq = 0
    bad: tuple[int, str, int | None] | None = None  # (checkpoint seq, reason, first_tampered)
    for i, chunk in enumerate(chunks):
        for cp in chunk.checkpoints:
            after_seq = cp.after_seq if cp.after_seq is not None else prev_seq
            after_hash = cp.after_hash if cp.after_seq is not None else prev_hash
            at_end = cp.events_after == 0 and later_events[i] == 0
            problem = _judge(cp, keys, after_seq, after_hash, at_end, last_cp_seq)
            if problem is not None:
                bad = problem
                break
            checked += 1
            last_cp_seq = cp.seq
        if bad is not None:
            break
        if chunk.range.count:
            prev_seq, prev_hash = _last_event(chunk)
    total_cps = sum(len(c.checkpoints) for c in chunks)
    latest = max((cp.seq for c in chunks for cp in c.checkpoints), default=None)
    if not chain.valid:
        return _result(
            False,
            chunks,
            chain.first_tampered,
            chain.reason,
            verified_at,
            chain.root_hash,
            checked,
            None,
            latest,
        )
    if bad is not None:
        seq, reason, first = bad
        return _result(False, chunks, first, reason, verified_at, chain.root_hash, checked, seq, latest)
    if total_cps == 0 and chain.total_events > 0:
        return _result(
            False,
            chunks,
            None,
            "no checkpoint in the file: none of its events is signed",
            verified_at,
            chain.root_hash,
            0,
            None,
            None,
        )
    return _result(True, chunks, None, None, verified_at, chain.root_hash, checked, None, latest)


def _last_event(chunk: _Chunk) -> tuple[int | None, str | None]:
    # The stored (claimed) last event of the chunk: what a checkpoint right after it refers to.
    return chunk.range.last_seq, chunk.range.last_hash


def _judge(
    cp: _Cp,
    keys: dict[str, Ed25519PublicKey],
    after_seq: int | None,
    after_hash: str | None,
    at_end: bool,
    last_cp_seq: int,
) -> tuple[int, str, int | None] | None:
    name = f"checkpoint at seq {cp.seq} (byte {cp.offset})"
    key = keys.get(cp.key_id)
    if key is None:
        return cp.seq, f"{name}: signed by unknown key {cp.key_id}", cp.seq
    if not checkpoint_signature_ok(key, cp.seq, cp.root, cp.created_at, cp.signature):
        return cp.seq, f"{name}: signature does not verify with key {cp.key_id}", cp.seq
    if cp.seq <= last_cp_seq:
        return cp.seq, f"{name}: out of order (after checkpoint {last_cp_seq})", cp.seq
    last = after_seq or 0
    if cp.seq > last and at_end:
        return (
            cp.seq,
            f"truncated tail: {name} covers events up to {cp.seq}, the file ends at {last}",
            last + 1,
        )
    if cp.seq != last:
        return cp.seq, f"{name}: not right after event {cp.seq}", cp.seq
    if cp.root != (after_hash if last else GENESIS_HASH):
        return cp.seq, f"{name}: signed root differs from event {cp.seq}'s hash", cp.seq
    return None


def _result(
    valid: bool,
    chunks: list[_Chunk],
    first: int | None,
    reason: str | None,
    verified_at: datetime,
    root: str | None = None,
    checked: int = 0,
    bad_cp: int | None = None,
    latest: int | None = None,
) -> CheckpointedVerification:
    return CheckpointedVerification(
        valid=valid,
        total_events=sum(c.range.count for c in chunks),
        first_tampered=first,
        chain_root_hash=root,
        verified_at=verified_at,
        reason=reason,
        checkpoints_verified=checked,
        bad_checkpoint=bad_cp,
        latest_checkpoint=latest,
    )
