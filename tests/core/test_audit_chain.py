"""Pure tests of the audit hash chain: canonical form, hashing, verification."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fetchml.core.audit import GENESIS_HASH, HASHED_FIELDS, canonical_json, event_hash, verify_chain

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def fields(seq: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sequence_num": seq,
        "timestamp": T0 + timedelta(seconds=seq),
        "event_type": "job_queued",
        "user_id": "alice",
        "resource": f"task:{seq}",
        "action": "submit",
        "success": True,
        "ip_address": "127.0.0.1",
        "error": None,
        "metadata": {"job_name": f"job{seq}", "priority": 5},
    }
    base.update(over)
    return base


def build_chain(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Links already-numbered field dicts into a chain, the way the appender does."""
    prev = GENESIS_HASH
    out = []
    for f in items:
        digest = event_hash(prev, f)
        out.append({**f, "prev_hash": prev, "event_hash": digest})
        prev = digest
    return out


def chain(n: int) -> list[dict[str, Any]]:
    return build_chain([fields(i) for i in range(1, n + 1)])


# --- canonical form and hash -------------------------------------------------------------


def test_genesis_is_64_zeros() -> None:
    assert GENESIS_HASH == "0" * 64


def test_canonical_json_is_sorted_compact_and_has_every_hashed_field() -> None:
    text = canonical_json(fields(1))
    assert " " not in text.replace("task:1", "")  # no separators with spaces
    body = json.loads(text)
    assert list(body) == sorted(body)
    assert set(body) == set(HASHED_FIELDS)
    assert body["timestamp"] == "2026-01-02T03:04:06.678901Z"


def test_canonical_json_ignores_hash_fields_and_unknown_keys() -> None:
    f = fields(1)
    assert canonical_json(f) == canonical_json({**f, "prev_hash": "x", "event_hash": "y", "junk": 1})


def test_canonical_json_normalises_timestamps_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    same_instant = (T0 + timedelta(seconds=1)).astimezone(plus2)
    naive_utc = (T0 + timedelta(seconds=1)).replace(tzinfo=None)
    ref = canonical_json(fields(1))
    assert canonical_json(fields(1, timestamp=same_instant)) == ref
    assert canonical_json(fields(1, timestamp=naive_utc)) == ref
    assert canonical_json(fields(1, timestamp=T0 + timedelta(seconds=1, microseconds=1))) != ref


def test_missing_metadata_hashes_like_empty_metadata() -> None:
    assert canonical_json(fields(1, metadata=None)) == canonical_json(fields(1, metadata={}))


def test_event_hash_is_sha256_of_prev_plus_canonical_json() -> None:
    f = fields(1)
    expected = hashlib.sha256((GENESIS_HASH + canonical_json(f)).encode()).hexdigest()
    assert event_hash(GENESIS_HASH, f) == expected
    assert event_hash("1" * 64, f) != expected


# --- verification ----------------------------------------------------------------------------


def test_empty_chain_is_valid_with_genesis_root() -> None:
    check = verify_chain([])
    assert check.valid and check.total_events == 0 and check.first_tampered is None
    assert check.root_hash == GENESIS_HASH


def test_intact_chain_is_valid_and_root_is_last_hash() -> None:
    events = chain(5)
    check = verify_chain(events)
    assert check.valid and check.first_tampered is None and check.reason is None
    assert check.total_events == 5
    assert check.root_hash == events[-1]["event_hash"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_id", "mallory"),
        ("resource", "task:999"),
        ("action", "cancel"),
        ("success", False),
        ("ip_address", "10.0.0.1"),
        ("error", "oops"),
        ("metadata", {"job_name": "job3", "priority": 10}),
        ("event_type", "job_cancelled"),
        ("timestamp", T0),
    ],
)
def test_edit_of_one_field_is_found_at_its_sequence_number(field: str, value: Any) -> None:
    events = chain(6)
    events[2] = {**events[2], field: value}
    check = verify_chain(events)
    assert not check.valid
    assert check.first_tampered == 3
    assert check.total_events == 6
    assert check.reason and "hash" in check.reason


def test_deleted_event_is_a_gap_at_the_missing_number() -> None:
    events = chain(6)
    del events[3]
    check = verify_chain(events)
    assert not check.valid and check.first_tampered == 4
    assert check.total_events == 5
    assert "gap" in (check.reason or "")


def test_deleted_first_event_is_found() -> None:
    check = verify_chain(chain(4)[1:])
    assert not check.valid and check.first_tampered == 1


def test_broken_prev_hash_link_is_found() -> None:
    events = chain(5)
    events[3] = {**events[3], "prev_hash": "f" * 64}
    check = verify_chain(events)
    assert not check.valid and check.first_tampered == 4
    assert "prev_hash" in (check.reason or "")


def test_rehashed_edit_still_breaks_the_next_link() -> None:
    """An attacker who edits an event and recomputes its own hash breaks the following link."""
    events = chain(5)
    edited = {**events[1], "user_id": "mallory"}
    edited["event_hash"] = event_hash(edited["prev_hash"], edited)
    events[1] = edited
    check = verify_chain(events)
    assert not check.valid and check.first_tampered == 3


def test_only_the_first_fault_is_named_and_all_events_are_counted() -> None:
    events = chain(8)
    events[2] = {**events[2], "user_id": "x"}
    events[5] = {**events[5], "user_id": "y"}
    check = verify_chain(events)
    assert check.first_tampered == 3 and check.total_events == 8


def test_chain_must_start_at_sequence_one() -> None:
    events = build_chain([fields(i) for i in range(2, 5)])
    check = verify_chain(events)
    assert not check.valid and check.first_tampered == 1


# --- property: any single edit or deletion is detected at the right place ---------------------

opt_text = st.one_of(st.none(), st.text(max_size=12))
event_fields = st.fixed_dictionaries(
    {
        "timestamp": st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
        "event_type": st.sampled_from(["job_queued", "job_cancelled", "auth_attempt", "key_created"]),
        "user_id": opt_text,
        "resource": opt_text,
        "action": opt_text,
        "success": st.booleans(),
        "ip_address": opt_text,
        "error": opt_text,
        "metadata": st.dictionaries(
            st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5)), max_size=3
        ),
    }
)

EDITABLE = (*HASHED_FIELDS, "prev_hash", "event_hash")


def edited_value(field: str, old: Any, data: st.DataObject) -> Any:
    if field == "sequence_num":
        return data.draw(st.integers(min_value=-5, max_value=10_000).filter(lambda v: v != old))
    if field == "timestamp":
        delta = data.draw(st.integers(min_value=1, max_value=10**9))
        return old + timedelta(microseconds=delta * data.draw(st.sampled_from([1, -1])))
    if field == "success":
        return not old
    if field in ("prev_hash", "event_hash"):
        return data.draw(
            st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).filter(lambda v: v != old)
        )
    if field == "metadata":
        return data.draw(
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).filter(lambda v: v != old)
        )
    return data.draw(st.one_of(st.none(), st.text(max_size=12)).filter(lambda v: v != old))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(event_fields, min_size=1, max_size=12), data=st.data())
def test_property_single_edit_is_detected_at_its_sequence_number(
    items: list[dict[str, Any]], data: st.DataObject
) -> None:
    events = build_chain([{**f, "sequence_num": i} for i, f in enumerate(items, start=1)])
    assert verify_chain(events).valid

    idx = data.draw(st.integers(min_value=0, max_value=len(events) - 1), label="index")
    field = data.draw(st.sampled_from(EDITABLE), label="field")
    tampered = {**events[idx], field: edited_value(field, events[idx][field], data)}
    if field in HASHED_FIELDS:
        # An edit that does not change the canonical form (e.g. None vs {} metadata) is no edit.
        assume(canonical_json(tampered) != canonical_json(events[idx]))
    events[idx] = tampered

    check = verify_chain(events)
    assert not check.valid
    assert check.first_tampered == idx + 1
    assert check.total_events == len(events)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(event_fields, min_size=2, max_size=12), data=st.data())
def test_property_deletion_is_detected_at_its_sequence_number(
    items: list[dict[str, Any]], data: st.DataObject
) -> None:
    events = build_chain([{**f, "sequence_num": i} for i, f in enumerate(items, start=1)])
    original_root = verify_chain(events).root_hash
    idx = data.draw(st.integers(min_value=0, max_value=len(events) - 1), label="index")
    del events[idx]
    check = verify_chain(events)
    if idx < len(events):
        assert not check.valid
        assert check.first_tampered == idx + 1
    else:
        # Dropping the newest event leaves a shorter valid chain; only the published root shows it.
        assert check.valid
        assert check.root_hash != original_root


def _reference_canonical_json(f: dict[str, Any]) -> str:
    """The canonical form as specified: json.dumps of the hashed fields, sorted, compact."""
    body: dict[str, Any] = {}
    for name in HASHED_FIELDS:
        value = f.get(name)
        if isinstance(value, datetime):
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
            value = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif name == "metadata" and value is None:
            value = {}
        body[name] = value
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        | st.dictionaries(st.integers(-3, 3), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    seq=st.integers(min_value=0, max_value=2**63),
    when=st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC) | st.none()
    ),
    text=st.none() | st.text(max_size=20),
    success=st.booleans(),
    metadata=st.none() | st.dictionaries(st.text(max_size=8), _json_values, max_size=5),
)
def test_canonical_json_is_the_reference_json_dumps_byte_for_byte(
    seq: int, when: datetime, text: str | None, success: bool, metadata: dict[str, Any] | None
) -> None:
    """The hand-spelled canonical form (audit.py) against json.dumps itself: control characters,
    quotes, non-ASCII, floats, nested lists and tuples, integer keys, years below 1000."""
    f = fields(1, sequence_num=seq, timestamp=when, user_id=text, resource=text, error=text)
    f.update(success=success, metadata=metadata)
    assert canonical_json(f) == _reference_canonical_json(f)
