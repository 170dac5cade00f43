"""Audit hash chain: canonical form, hashing and verification. Pure functions.

event_hash = sha256(prev_hash || canonical_json(event without prev_hash/event_hash))
canonical_json = sorted keys, no spaces, UTF-8, timestamps as UTC RFC 3339 with microseconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fetchml.core.timeutil import rfc3339

GENESIS_HASH = "0" * 64

HASHED_FIELDS = (
    "sequence_num",
    "timestamp",
    "event_type",
    "user_id",
    "resource",
    "action",
    "success",
    "ip_address",
    "error",
    "metadata",
)


def canonical_json(fields: Mapping[str, Any]) -> str:
    body: dict[str, Any] = {}
    for name in HASHED_FIELDS:
        value = fields.get(name)
        if isinstance(value, datetime):
            value = rfc3339(value)
        elif name == "metadata" and value is None:
            value = {}
        body[name] = value
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    valid: bool
    total_events: int
    first_tampered: int | None
    root_hash: str
    reason: str | None = None


def verify_chain(events: Iterable[Mapping[str, Any]]) -> ChainCheck:
    """Walk events in sequence order; name the first sequence number that is missing,
    mislinked, or whose content no longer matches its hash. total_events counts them all."""
    expected_seq = 1
    prev = GENESIS_HASH
    count = 0
    first_bad: int | None = None
    reason: str | None = None
    for ev in events:
        count += 1
        if first_bad is not None:
            continue
        seq = int(ev["sequence_num"])
        if seq != expected_seq:
            first_bad, reason = expected_seq, f"sequence gap: expected {expected_seq}, found {seq}"
        elif ev["prev_hash"] != prev:
            first_bad, reason = seq, "prev_hash does not link to the previous event"
        elif event_hash(prev, ev) != ev["event_hash"]:
            first_bad, reason = seq, "event content does not match its hash"
        else:
            prev = ev["event_hash"]
            expected_seq += 1
    return ChainCheck(first_bad is None, count, first_bad, prev, reason)
