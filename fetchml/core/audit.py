"""Audit hash chain: canonical form, hashing and verification. Pure functions.

event_hash = sha256(prev_hash || canonical_json(event without prev_hash/event_hash))
canonical_json = sorted keys, no spaces, UTF-8, timestamps as UTC RFC 3339 with microseconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import model_serializer

from fetchml.core.models import VerificationResult as ContractVerificationResult
from fetchml.core.models import Wire
from fetchml.core.timeutil import rfc3339

# The string encoder json.dumps uses with ensure_ascii=False (its C version where built).
_encode_str: Callable[[str], str] = json.encoder.encode_basestring

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


_HASHED = frozenset(HASHED_FIELDS)


def canonical_json(fields: Mapping[str, Any]) -> str:
    """`json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)`
    of the hashed fields, byte for byte: the writer hashes every audit event it appends, and
    json.dumps's sorting and encoder set-up cost more than the rest of an event's insert. Plain
    values are spelled here with json's own string encoder; anything else (floats, tuples,
    non-string keys, subclasses) goes through json.dumps itself (tests/core/test_audit_chain.py
    checks the two agree on random events)."""
    get, enc = fields.get, _canonical_top
    metadata = get("metadata")
    return (
        f'{{"action":{enc(get("action"))},"error":{enc(get("error"))},'
        f'"event_type":{enc(get("event_type"))},"ip_address":{enc(get("ip_address"))},'
        f'"metadata":{enc({} if metadata is None else metadata)},"resource":{enc(get("resource"))},'
        f'"sequence_num":{enc(get("sequence_num"))},"success":{enc(get("success"))},'
        f'"timestamp":{enc(get("timestamp"))},"user_id":{enc(get("user_id"))}}}'
    )


# The names canonical_json spells out, in their sorted order: a hashed field added to
# HASHED_FIELDS and not there would silently go unhashed.
if tuple(sorted(HASHED_FIELDS)) != (
    "action", "error", "event_type", "ip_address", "metadata", "resource", "sequence_num", "success",
    "timestamp", "user_id",
):  # fmt: skip
    raise RuntimeError("canonical_json does not spell out every hashed field")


def _canonical_top(value: Any) -> str:
    # A datetime at the top level is spelled RFC 3339; inside metadata, json.dumps's str().
    if isinstance(value, datetime):
        return _encode_str(rfc3339(value))
    return _canonical_value(value)


def _canonical_value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is dict and all(type(k) is str for k in value):
        return "{" + ",".join(f"{_encode_str(k)}:{_canonical_value(value[k])}" for k in sorted(value)) + "}"
    if kind is list:
        return "[" + ",".join(_canonical_value(v) for v in value) + "]"
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


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


# --- the fast path ------------------------------------------------------------------------------
#
# Verifying a million events is dominated by re-encoding them. orjson with sorted keys gives the
# same bytes as canonical_json for everything the server writes except a few float spellings
# (1e-07 vs 1e-7) and values orjson refuses (non-string keys, integers past 64 bits). So the fast
# path is only ever a shortcut: a row whose fast hash does not match is hashed again the reference
# way before it is called tampered. That keeps the verdict exactly the reference's.

_SORTED = orjson.OPT_SORT_KEYS


def fast_canonical(
    seq: int,
    timestamp: str,
    event_type: str,
    user_id: str | None,
    resource: str | None,
    action: str | None,
    success: bool,
    ip_address: str | None,
    error: str | None,
    metadata: Any,
) -> bytes:
    """canonical_json's bytes (usually; see above) for one event, timestamp already RFC 3339."""
    return orjson.dumps(
        {
            "action": action,
            "error": error,
            "event_type": event_type,
            "ip_address": ip_address,
            "metadata": {} if metadata is None else metadata,
            "resource": resource,
            "sequence_num": seq,
            "success": success,
            "timestamp": timestamp,
            "user_id": user_id,
        },
        option=_SORTED,
    )


def fast_event_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


# --- checkpoints ----------------------------------------------------------------------------------

CHECKPOINT_DOMAIN = "fetchml-audit-checkpoint/v1"


def checkpoint_message(seq: int, root: str, created_at: datetime | str) -> bytes:
    """The exact bytes a checkpoint signs (UTF-8, no trailing newline):

        fetchml-audit-checkpoint/v1\\n{seq}\\n{root}\\n{created_at as RFC 3339 UTC, microseconds, Z}

    The domain line keeps a checkpoint signature from being replayed as anything else."""
    when = rfc3339(created_at) if isinstance(created_at, datetime) else created_at
    return f"{CHECKPOINT_DOMAIN}\n{seq}\n{root}\n{when}".encode()


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_keys(pem: bytes) -> list[Ed25519PublicKey]:
    """Every Ed25519 key in a PEM blob: public keys, or private keys (their public half)."""
    keys: list[Ed25519PublicKey] = []
    for match in re.finditer(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", pem, re.S):
        blob = match.group(0)
        key: Any
        if b"PRIVATE" in match.group(1):
            key = serialization.load_pem_private_key(blob, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(blob)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 key")
        keys.append(key)
    if not keys:
        raise ValueError("no PEM key found")
    return keys


def sign_checkpoint(private_key: Ed25519PrivateKey, seq: int, root: str, created_at: datetime) -> str:
    return base64.b64encode(private_key.sign(checkpoint_message(seq, root, created_at))).decode("ascii")


def checkpoint_signature_ok(
    public_key: Ed25519PublicKey, seq: int, root: str, created_at: datetime | str, signature: str
) -> bool:
    try:
        public_key.verify(
            base64.b64decode(signature, validate=True), checkpoint_message(seq, root, created_at)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


class AuditCheckpoint(Wire):
    sequence_num: int
    root: str
    created_at: datetime
    key_id: str
    signature: str


class AuditCheckpointList(Wire):
    checkpoints: list[AuditCheckpoint]
    total: int
    limit: int


class AuditPublicKey(Wire):
    key_id: str
    algorithm: str = "ed25519"
    public_key_pem: str


class VerificationResult(ContractVerificationResult):
    """The contract's VerificationResult plus our extensions, which are left out (not null) when
    they do not apply: checkpoints_verified (always), bad_checkpoint (the sequence number of the
    first checkpoint that failed), latest_checkpoint (the newest checkpoint's sequence number)."""

    checkpoints_verified: int = 0
    bad_checkpoint: int | None = None
    latest_checkpoint: int | None = None

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: Any) -> Any:
        data = handler(self)
        for name in ("bad_checkpoint", "latest_checkpoint"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


# The name the rest of the code uses; the class keeps the contract's schema name in /schema.
CheckpointedVerification = VerificationResult


# --- range checks (the parallel verifiers' unit of work) ---------------------------------------

# A row as the fast verifiers read it: (sequence_num, prev_hash, event_hash, body), where body
# holds the hashed fields (any key order), metadata parsed, timestamp already RFC 3339 -- or is
# the canonical bytes themselves, as an export file holds them.
FastRow = tuple[int, str, str, Any]


@dataclass
class RangeCheck:
    """One contiguous stretch of the chain, checked on its own. Links inside it are checked;
    the link into it (first_prev) and its position (first_seq) are stitched by the caller."""

    count: int = 0
    first_seq: int | None = None
    first_prev: str | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    bad_seq: int | None = None
    reason: str | None = None


def check_rows(
    rows: Iterable[FastRow], reference: Callable[[FastRow], str | None] | None = None
) -> RangeCheck:
    """Check FastRows given in file/sequence order. `reference` hashes a row exactly (the json
    module's way) when the fast encoding disagrees; it returns None when it cannot either."""
    sha256 = hashlib.sha256
    dumps = orjson.dumps
    res = RangeCheck()
    count = 0
    last_seq: int | None = None
    last_hash = ""
    bad: int | None = None
    reason: str | None = None
    for row in rows:
        count += 1
        if bad is not None:
            continue
        seq, prev, digest, body = row
        if last_seq is None:
            res.first_seq, res.first_prev = seq, prev
        elif seq != last_seq + 1:
            bad, reason = last_seq + 1, f"sequence gap: expected {last_seq + 1}, found {seq}"
            continue
        elif prev != last_hash:
            bad, reason = seq, "prev_hash does not link to the previous event"
            continue
        try:
            # bytes: the canonical encoding as read (an export line); dict: encode it here.
            payload = body if body.__class__ is bytes else dumps(body, option=_SORTED)
            ok = sha256(prev.encode() + payload).hexdigest() == digest
        except (TypeError, ValueError, AttributeError):
            ok = False
        if not ok and (reference is None or reference(row) != digest):
            bad, reason = seq, "event content does not match its hash"
            continue
        last_seq, last_hash = seq, digest
    res.count = count
    res.last_seq, res.last_hash = last_seq, (last_hash or None)
    res.bad_seq, res.reason = bad, reason
    return res


def reference_hash(row: FastRow) -> str | None:
    """The exact (json module) hash of a FastRow whose timestamp is an RFC 3339 string."""
    seq, prev, _, body = row
    if not body.keys() <= _HASHED:
        return None  # a field the hash does not cover is not ours to accept
    try:
        return event_hash(prev, {**body, "sequence_num": seq})
    except (TypeError, ValueError, UnicodeEncodeError):
        return None


def stitch(ranges: Iterable[RangeCheck]) -> ChainCheck:
    """Join range checks (in order) into the verdict verify_chain would give for the whole."""
    expected, prev, total = 1, GENESIS_HASH, 0
    first_bad: int | None = None
    reason: str | None = None
    for r in ranges:
        total += r.count
        if first_bad is not None or r.count == 0:
            continue
        if r.first_seq != expected:
            first_bad, reason = expected, f"sequence gap: expected {expected}, found {r.first_seq}"
        elif r.first_prev != prev:
            first_bad, reason = r.first_seq, "prev_hash does not link to the previous event"
        elif r.bad_seq is not None:
            first_bad, reason = r.bad_seq, r.reason
        else:
            assert r.last_seq is not None and r.last_hash is not None
            expected, prev = r.last_seq + 1, r.last_hash
    return ChainCheck(first_bad is None, total, first_bad, prev, reason)
