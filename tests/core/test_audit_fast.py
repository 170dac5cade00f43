"""The fast audit verifiers agree with the reference: byte-identical canonical JSON where the
encoders agree, the same verdict everywhere (the fast path falls back to the reference)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetchml.core.audit import (
    GENESIS_HASH,
    canonical_json,
    check_rows,
    checkpoint_message,
    checkpoint_signature_ok,
    event_hash,
    fast_canonical,
    key_id_of,
    reference_hash,
    sign_checkpoint,
    stitch,
    verify_chain,
)
from fetchml.core.timeutil import rfc3339

# Text the server can store: any Unicode scalar value (lone surrogates cannot be UTF-8 encoded).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def json_values(floats: bool) -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | INTS | TEXT
    if floats:
        leaves = leaves | st.floats(allow_nan=False, allow_infinity=False)
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
        max_leaves=12,
    )


def events(floats: bool) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "sequence_num": st.integers(min_value=1, max_value=2**53),
            "timestamp": st.datetimes(
                min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
            ),
            "event_type": st.sampled_from(["job_queued", "auth_attempt", "audit_verified"]),
            "user_id": st.none() | TEXT,
            "resource": st.none() | TEXT,
            "action": st.none() | TEXT,
            "success": st.booleans(),
            "ip_address": st.none() | st.sampled_from(["127.0.0.1", "::1", "10.0.0.7"]),
            "error": st.none() | TEXT,
            "metadata": st.none() | st.dictionaries(TEXT, json_values(floats), max_size=5),
        }
    )


def fast_bytes(ev: dict[str, Any]) -> bytes:
    return fast_canonical(
        ev["sequence_num"],
        rfc3339(ev["timestamp"]),
        ev["event_type"],
        ev["user_id"],
        ev["resource"],
        ev["action"],
        ev["success"],
        ev["ip_address"],
        ev["error"],
        ev["metadata"],
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(floats=False))
def test_fast_canonical_is_byte_identical_without_floats(ev: dict[str, Any]) -> None:
    assert fast_bytes(ev) == canonical_json(ev).encode("utf-8")


@pytest.mark.parametrize(
    "meta",
    [
        {"ü": "日本語", "emoji": "😀", "ctl": "\x00\x1f\x7f", "sep": "\u2028\u2029", "q": '"\\/'},
        {"z": {"b": [1, {"d": None, "c": True}], "a": -(2**63)}, "a": [], "m": {}},
        {"big": 2**63 - 1, "neg": -1, "zero": 0, "f": 0.1, "g": 1e16, "h": -0.0, "i": 1e300},
        {"1": "numeric key", "": "empty key", "B": 1, "a": 2, "é": 3, "e": 4},
    ],
)
def test_fast_canonical_on_hand_picked_events(meta: dict[str, Any]) -> None:
    ev = {
        "sequence_num": 42,
        "timestamp": datetime(2026, 5, 1, 12, 0, 0, 0, tzinfo=UTC),
        "event_type": "job_queued",
        "user_id": "ålice",
        "resource": "task:ab",
        "action": "submit",
        "success": False,
        "ip_address": "::1",
        "error": "line1\nline2\ttab",
        "metadata": meta,
    }
    assert fast_bytes(ev) == canonical_json(ev).encode("utf-8")


def chain(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    prev = GENESIS_HASH
    out = []
    for i, ev in enumerate(evs, start=1):
        ev = dict(ev, sequence_num=i)
        digest = event_hash(prev, ev)
        out.append(dict(ev, prev_hash=prev, event_hash=digest))
        prev = digest
    return out


def fast_rows(evs: list[dict[str, Any]]) -> list[tuple[int, str, str, dict[str, Any]]]:
    rows = []
    for ev in evs:
        body = {k: v for k, v in ev.items() if k not in ("prev_hash", "event_hash")}
        body["timestamp"] = rfc3339(body["timestamp"])
        rows.append((ev["sequence_num"], ev["prev_hash"], ev["event_hash"], body))
    return rows


def ranged(rows: list[Any], cuts: list[int]) -> Any:
    bounds = [0, *sorted(set(cuts)), len(rows)]
    return stitch(check_rows(rows[a:b], reference_hash) for a, b in itertools.pairwise(bounds))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(floats=True), min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_ranges_stitched_agree_with_the_reference_walk(evs: list[dict[str, Any]], rnd: random.Random) -> None:
    """Floats included (the encoders spell some differently: the fallback must catch it), and
    one tampering of a random kind, checked in random ranges as the parallel verifiers do."""
    good = chain(evs)
    cuts = [rnd.randrange(len(good) + 1) for _ in range(rnd.randrange(4))]
    clean = ranged(fast_rows(good), cuts)
    assert clean.valid and clean == verify_chain(good)

    bad = [dict(e) for e in good]
    kind = rnd.choice(["edit", "delete", "swap", "relink"])
    i = rnd.randrange(len(bad))
    if kind == "edit":
        bad[i]["user_id"] = (bad[i]["user_id"] or "") + "x"
    elif kind == "delete":
        del bad[i]
    elif kind == "swap" and len(bad) > 1:
        j = (i + 1) % len(bad)
        bad[i], bad[j] = bad[j], bad[i]
    else:
        bad[i]["prev_hash"] = "f" * 64
    expected = verify_chain(bad)
    got = ranged(fast_rows(bad), [c for c in cuts if c <= len(bad)])
    assert (got.valid, got.first_tampered, got.total_events, got.reason) == (
        expected.valid,
        expected.first_tampered,
        expected.total_events,
        expected.reason,
    )


def test_a_float_the_encoders_spell_differently_still_verifies() -> None:
    ev = chain(
        [
            {
                "timestamp": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=1),
                "event_type": "job_queued",
                "user_id": "u",
                "resource": None,
                "action": None,
                "success": True,
                "ip_address": None,
                "error": None,
                "metadata": {"lr": 1e-07},
            }
        ]
    )
    rows = fast_rows(ev)
    assert fast_bytes(ev[0]) != canonical_json(ev[0]).encode()  # 1e-7 vs 1e-07
    assert check_rows(rows, reference_hash).bad_seq is None
    assert check_rows(rows, None).bad_seq == 1  # without the fallback it would be a false alarm


def test_checkpoint_message_signature_and_key_id() -> None:
    when = datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=UTC)
    assert checkpoint_message(7, "ab" * 32, when) == (
        b"fetchml-audit-checkpoint/v1\n7\n" + b"ab" * 32 + b"\n2026-03-04T05:06:07.000089Z"
    )
    key = Ed25519PrivateKey.generate()
    sig = sign_checkpoint(key, 7, "ab" * 32, when)
    pub = key.public_key()
    assert checkpoint_signature_ok(pub, 7, "ab" * 32, when, sig)
    assert checkpoint_signature_ok(pub, 7, "ab" * 32, "2026-03-04T05:06:07.000089Z", sig)
    assert not checkpoint_signature_ok(pub, 8, "ab" * 32, when, sig)
    assert not checkpoint_signature_ok(pub, 7, "cd" * 32, when, sig)
    assert not checkpoint_signature_ok(Ed25519PrivateKey.generate().public_key(), 7, "ab" * 32, when, sig)
    assert not checkpoint_signature_ok(pub, 7, "ab" * 32, when, "not base64!")
    kid = key_id_of(pub)
    assert len(kid) == 16 and int(kid, 16) >= 0
