"""The audit chain over HTTP: every mutation recorded, filters, verify, chain root, tampering."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from fetchml.core.audit import GENESIS_HASH, verify_chain
from tests.harness import Keys, ServerHandle, expect_error, make_keys

Event = dict[str, Any]


def all_events(srv: ServerHandle, admin: str, **params: Any) -> list[Event]:
    """Every event matching params (of every type unless they say otherwise), newest first,
    fetched page by page."""
    out: list[Event] = []
    with srv.http(admin) as http:
        while True:
            query = {"include_extended": "true", **params, "limit": 1000, "offset": len(out)}
            page = http.get("/v1/audit/events", params=query).json()
            out += page["events"]
            if len(out) >= page["total"] or not page["events"]:
                return out


def events_for(srv: ServerHandle, admin: str, resource: str) -> list[Event]:
    return [e for e in all_events(srv, admin) if e["resource"] == resource]


def verify(srv: ServerHandle, admin: str) -> dict[str, Any]:
    with srv.http(admin) as http:
        r = http.post("/v1/audit/verify")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def chain_root(srv: ServerHandle, admin: str) -> dict[str, Any]:
    with srv.http(admin) as http:
        r = http.get("/v1/audit/chain-root")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- every mutation is recorded ---------------------------------------------------------------


def test_task_submit_and_cancel_are_recorded(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.user) as http:
        task = http.post("/v1/tasks", json={"job_name": "audited", "priority": 7}).json()
        assert http.delete(f"/v1/tasks/{task['id']}").status_code == 204
    evs = events_for(shared_server, keys.admin, f"task:{task['id']}")
    assert [e["event_type"] for e in evs] == ["job_cancelled", "job_queued"]  # newest first
    cancelled, queued = evs
    assert queued["user_id"] == "alice" and queued["success"] is True
    assert queued["action"] == "submit" and queued["ip_address"] == "127.0.0.1"
    assert queued["metadata"]["job_name"] == "audited" and queued["metadata"]["priority"] == 7
    assert cancelled["user_id"] == "alice" and cancelled["action"] == "cancel"
    assert cancelled["sequence_num"] > queued["sequence_num"]
    assert ts(queued["timestamp"]) <= ts(cancelled["timestamp"])


def test_admin_cancel_is_recorded_under_the_admin(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.other) as http:
        task = http.post("/v1/tasks", json={"job_name": "bobs"}).json()
    with shared_server.http(keys.admin) as http:
        assert http.delete(f"/v1/tasks/{task['id']}").status_code == 204
    cancelled = events_for(shared_server, keys.admin, f"task:{task['id']}")[0]
    assert cancelled["event_type"] == "job_cancelled" and cancelled["user_id"] == "root"
    assert cancelled["metadata"].get("owner") == "bob"


def test_experiment_creation_is_recorded(shared_server: ServerHandle, keys: Keys) -> None:
    name = f"aud-{uuid.uuid4().hex[:8]}"
    with shared_server.http(keys.other) as http:
        exp = http.post("/v1/experiments", json={"name": name}).json()
    (ev,) = events_for(shared_server, keys.admin, f"experiment:{exp['id']}")
    assert ev["event_type"] == "experiment_created" and ev["user_id"] == "bob"
    assert ev["metadata"]["name"] == name


def test_key_create_and_revoke_are_recorded_without_the_key(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.admin) as http:
        created = http.post("/v1/keys", json={"user": "olga", "role": "worker"}).json()
        assert http.delete(f"/v1/keys/{created['id']}").status_code == 204
    evs = events_for(shared_server, keys.admin, f"key:{created['id']}")
    assert [e["event_type"] for e in evs] == ["key_revoked", "key_created"]
    assert all(e["user_id"] == "root" for e in evs)
    assert evs[1]["metadata"]["key_user"] == "olga" and evs[1]["metadata"]["role"] == "worker"
    assert created["key"] not in str(all_events(shared_server, keys.admin))


def test_failed_mutations_record_nothing(shared_server: ServerHandle, keys: Keys) -> None:
    before = chain_root(shared_server, keys.admin)
    with shared_server.http(keys.user) as http:
        task = http.post("/v1/tasks", json={"job_name": "once"}).json()
        http.delete(f"/v1/tasks/{task['id']}")
        after_ok = chain_root(shared_server, keys.admin)
        assert after_ok["total_events"] == before["total_events"] + 2
        expect_error(http.delete(f"/v1/tasks/{task['id']}"), 409, "CONFLICT")
        expect_error(http.post("/v1/tasks", json={"job_name": "no good"}), 422, "VALIDATION_ERROR")
        expect_error(http.delete("/v1/tasks/none-such"), 404, "NOT_FOUND")
        expect_error(http.get("/v1/keys"), 403, "FORBIDDEN")
    with shared_server.http(keys.other) as http:
        expect_error(http.delete(f"/v1/tasks/{task['id']}"), 403, "FORBIDDEN")
    assert chain_root(shared_server, keys.admin) == after_ok


@pytest.mark.parametrize(
    ("headers", "reason", "user"),
    [
        ({}, "missing key", None),
        ({"X-API-Key": "fml_Unknown1234567890"}, "unknown key", None),
        ({"X-API-Key": "x" * 300}, "malformed key", None),
    ],
    ids=["missing", "unknown", "oversized"],
)
def test_failed_authentication_is_recorded(
    shared_server: ServerHandle, keys: Keys, headers: dict[str, str], reason: str, user: str | None
) -> None:
    before = chain_root(shared_server, keys.admin)["total_events"]
    with shared_server.http() as http:
        expect_error(http.get("/v1/queue", headers=headers), 401, "UNAUTHORIZED")
    evs = all_events(shared_server, keys.admin, event_type="auth_attempt")
    ev = evs[0]
    assert ev["sequence_num"] == before + 1
    assert ev["success"] is False and ev["error"] == reason and ev.get("user_id") == user  # absent: None
    assert ev["ip_address"] == "127.0.0.1"
    raw = headers.get("X-API-Key")
    if raw:
        assert raw not in str(ev)  # at most a short prefix is kept


def test_revoked_key_attempt_is_recorded_with_its_owner(shared_server: ServerHandle, keys: Keys) -> None:
    with shared_server.http(keys.admin) as http:
        created = http.post("/v1/keys", json={"user": "pete", "role": "user"}).json()
        http.delete(f"/v1/keys/{created['id']}")
    with shared_server.http(created["key"]) as http:
        expect_error(http.get("/v1/queue"), 401, "UNAUTHORIZED")
    ev = all_events(shared_server, keys.admin, event_type="auth_attempt")[0]
    assert ev["success"] is False and ev["error"] == "revoked key" and ev["user_id"] == "pete"
    assert ev["metadata"]["key_prefix"] == created["prefix"]
    assert created["key"] not in str(ev)


# --- listing and filters -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def quiet(module_server_factory: Callable[..., ServerHandle]) -> tuple[ServerHandle, Keys, list[Event]]:
    """A server of its own with a known history: 4 key_created, then 6 job_queued, 1 cancel."""
    srv = module_server_factory()
    k = make_keys(srv)
    with srv.http(k.user) as alice, srv.http(k.other) as bob:
        ids = [
            (alice if i % 2 else bob).post("/v1/tasks", json={"job_name": f"f{i}"}).json()["id"]
            for i in range(6)
        ]
        assert alice.delete(f"/v1/tasks/{ids[1]}").status_code == 204
    return srv, k, all_events(srv, k.admin)


def test_list_shape_order_and_pagination(quiet) -> None:
    srv, k, _ = quiet
    history = all_events(srv, k.admin)
    seqs = [e["sequence_num"] for e in history]
    assert seqs == list(range(len(history), 0, -1))  # newest first, no gaps
    with srv.http(k.admin) as http:
        page = http.get(
            "/v1/audit/events", params={"limit": 3, "offset": 2, "include_extended": "true"}
        ).json()
        assert set(page) == {"events", "total", "limit", "offset"}
        assert page["limit"] == 3 and page["offset"] == 2
        assert [e["sequence_num"] for e in page["events"]] == seqs[2:5]
        default = http.get("/v1/audit/events").json()
        assert default["limit"] == 100 and default["offset"] == 0
        expect_error(http.get("/v1/audit/events", params={"limit": 1001}), 400, "BAD_REQUEST")
    ev = history[0]
    assert set(ev) >= {
        "sequence_num",
        "timestamp",
        "event_type",
        "user_id",
        "resource",
        "action",
        "success",
        "prev_hash",
        "event_hash",
        "metadata",
    }
    # Absent values are left out, never null (this cancel has no error; the server's address is
    # 127.0.0.1 over loopback).
    for event in history:
        assert None not in event.values(), event
    assert any("error" not in e for e in history)


def test_filter_by_event_type_and_user(quiet) -> None:
    srv, k, _ = quiet
    with srv.http(k.admin) as http:
        queued = http.get("/v1/audit/events", params={"event_type": "job_queued"}).json()
        assert queued["total"] == 6 and {e["event_type"] for e in queued["events"]} == {"job_queued"}
        alice = http.get("/v1/audit/events", params={"user_id": "alice", "include_extended": "true"}).json()
        assert alice["total"] == 4  # 3 submissions and a cancel
        both = http.get("/v1/audit/events", params={"user_id": "bob", "event_type": "job_queued"}).json()
        assert both["total"] == 3 and all(e["user_id"] == "bob" for e in both["events"])
        none = http.get("/v1/audit/events", params={"event_type": "job_completed"}).json()
        assert none["total"] == 0 and none["events"] == []
        expect_error(http.get("/v1/audit/events", params={"event_type": "nope"}), 400, "BAD_REQUEST")


CONTRACT_TYPES = {
    "job_queued",
    "job_started",
    "job_completed",
    "file_access",
    "auth_attempt",
    "plugin_configured",
    "scheduler_drain",
    "audit_verified",
}


def test_default_listing_stays_inside_the_contracts_event_types(quiet) -> None:
    """A client generated from the contract (a closed enum) must be able to read every page; our
    own types appear when asked for, and verification still covers them."""
    srv, k, history = quiet
    ours = [e for e in history if e["event_type"] not in CONTRACT_TYPES]
    assert {e["event_type"] for e in ours} == {"job_cancelled", "key_created"}  # keys made in the db
    with srv.http(k.admin) as http:
        default = http.get("/v1/audit/events", params={"limit": 1000}).json()
        assert {e["event_type"] for e in default["events"]} <= CONTRACT_TYPES
        assert default["total"] == len(history) - len(ours) == len(default["events"])
        alice = http.get("/v1/audit/events", params={"user_id": "alice"}).json()
        assert alice["total"] == 3  # her submissions; her cancel is not a contract type
        # One of ours asked for by name.
        cancelled = http.get("/v1/audit/events", params={"event_type": "job_cancelled"}).json()
        assert [e["sequence_num"] for e in cancelled["events"]] == [
            e["sequence_num"] for e in ours if e["event_type"] == "job_cancelled"
        ]
        assert cancelled["total"] == 1
        # Everything, on request: the same events as the history, total included.
        everything = http.get("/v1/audit/events", params={"limit": 1000, "include_extended": "true"}).json()
        assert everything["total"] == len(history)
        assert [e["sequence_num"] for e in everything["events"]] == [e["sequence_num"] for e in history]
        expect_error(
            http.get("/v1/audit/events", params={"include_extended": "maybe"}), 400, "BAD_REQUEST"
        )
        root = http.get("/v1/audit/chain-root").json()
    # The chain root and verification count every event, ours included.
    assert root["total_events"] == history[0]["sequence_num"] == len(history)
    assert verify(srv, k.admin)["total_events"] >= len(history)


def test_filter_by_time_range(quiet) -> None:
    srv, k, history = quiet
    oldest_first = list(reversed(history))
    lo, hi = oldest_first[3], oldest_first[7]
    expected = [
        e["sequence_num"]
        for e in oldest_first
        if ts(lo["timestamp"]) <= ts(e["timestamp"]) <= ts(hi["timestamp"])
    ]
    assert len(expected) >= 5
    plus2 = timezone(timedelta(hours=2))
    with srv.http(k.admin) as http:
        for start, end in [
            (lo["timestamp"], hi["timestamp"]),
            (
                ts(lo["timestamp"]).astimezone(plus2).isoformat(),
                ts(hi["timestamp"]).astimezone(plus2).isoformat(),
            ),
        ]:
            got = http.get(
                "/v1/audit/events", params={"from": start, "to": end, "include_extended": "true"}
            ).json()
            assert sorted(e["sequence_num"] for e in got["events"]) == expected and got["total"] == len(
                expected
            )
        after = http.get(
            "/v1/audit/events", params={"from": hi["timestamp"], "include_extended": "true"}
        ).json()
        assert min(e["sequence_num"] for e in after["events"]) == hi["sequence_num"]
        before = http.get(
            "/v1/audit/events", params={"to": lo["timestamp"], "include_extended": "true"}
        ).json()
        assert max(e["sequence_num"] for e in before["events"]) == lo["sequence_num"]


def test_events_over_http_recompute_to_the_same_chain(quiet) -> None:
    """Anyone with the events can check the chain themselves: the API exposes what is hashed."""
    srv, k, _ = quiet
    evs = list(reversed(all_events(srv, k.admin)))
    for e in evs:
        e["timestamp"] = ts(e["timestamp"])
    check = verify_chain(evs)
    assert check.valid, check
    assert evs[0]["prev_hash"] == GENESIS_HASH
    assert check.root_hash == chain_root(srv, k.admin)["root_hash"]


# --- verify and chain root ---------------------------------------------------------------------


def test_verify_valid_chain_and_its_own_event(quiet) -> None:
    srv, k, _ = quiet
    root_before = chain_root(srv, k.admin)
    result = verify(srv, k.admin)
    assert set(result) >= {"valid", "total_events", "chain_root_hash", "verified_at"}
    assert result["valid"] is True and "first_tampered" not in result  # absent, not null
    assert result["total_events"] == root_before["total_events"]
    assert result["chain_root_hash"] == root_before["root_hash"]
    assert ts(result["verified_at"]) >= ts(root_before["timestamp"])

    root_after = chain_root(srv, k.admin)
    assert root_after["total_events"] == root_before["total_events"] + 1
    newest = all_events(srv, k.admin)[0]
    assert (
        newest["event_type"] == "audit_verified" and newest["user_id"] == "root" and newest["success"] is True
    )
    assert newest["prev_hash"] == result["chain_root_hash"]
    assert newest["event_hash"] == root_after["root_hash"]
    assert root_after["timestamp"] == newest["timestamp"]


def test_chain_root_on_an_empty_chain(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory()
    # A key made straight in the database is itself audited (key_created by local-operator) ...
    admin = srv.make_key("root", "admin")
    root = chain_root(srv, admin)
    assert root["total_events"] == 1
    # ... so empty the table to see the genesis root.
    srv.db_exec("DELETE FROM audit_events")
    root = chain_root(srv, admin)
    assert root == {"root_hash": GENESIS_HASH, "total_events": 0}  # no timestamp: absent, not null
    result = verify(srv, admin)
    assert (
        result["valid"] is True and result["total_events"] == 0 and result["chain_root_hash"] == GENESIS_HASH
    )
    assert all_events(srv, admin)[0]["prev_hash"] == GENESIS_HASH


def test_audit_routes_are_admin_only(shared_server: ServerHandle, keys: Keys) -> None:
    for key in (keys.user, keys.worker):
        with shared_server.http(key) as http:
            expect_error(http.get("/v1/audit/events"), 403, "FORBIDDEN")
            expect_error(http.post("/v1/audit/verify"), 403, "FORBIDDEN")
            expect_error(http.get("/v1/audit/chain-root"), 403, "FORBIDDEN")


# --- tampering -----------------------------------------------------------------------------------

COLUMNS = (
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
    "prev_hash",
    "event_hash",
)


def row(srv: ServerHandle, seq: int) -> tuple[Any, ...]:
    (r,) = srv.db_exec(f"SELECT {', '.join(COLUMNS)} FROM audit_events WHERE sequence_num = ?", (seq,))
    return r


def restore(srv: ServerHandle, original: tuple[Any, ...]) -> None:
    srv.db_exec("DELETE FROM audit_events WHERE sequence_num = ?", (original[0],))
    srv.db_exec(
        f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        original,
    )


@pytest.fixture(scope="module")
def victim(quiet) -> int:
    """A job_queued event in the middle of the quiet server's chain."""
    _, _, history = quiet
    queued = sorted(e["sequence_num"] for e in history if e["event_type"] == "job_queued")
    seq = queued[2]
    assert 1 < seq < len(history)
    return seq


def expect_tampered(srv: ServerHandle, admin: str, seq: int) -> None:
    result = verify(srv, admin)
    assert result["valid"] is False, result
    assert result["first_tampered"] == seq, result
    # The failed verification is itself on the record, appended to the (still linked) head.
    newest = all_events(srv, admin, event_type="audit_verified")[0]
    assert newest["success"] is False and newest["metadata"]["first_tampered"] == seq


@pytest.mark.parametrize(
    ("column", "new_value"),
    [
        ("user_id", "mallory"),
        ("resource", "task:forged"),
        ("action", "delete"),
        ("success", False),
        ("ip_address", "10.6.6.6"),
        ("error", "nothing to see"),
        ("metadata", '{"job_name": "f4", "priority": 10}'),
        ("event_type", "job_cancelled"),
        ("timestamp", "2020-01-01 00:00:00.000000"),
        ("event_hash", "e" * 64),
        ("prev_hash", "0" * 64),
    ],
)
def test_editing_one_field_is_detected_at_that_row(quiet, victim: int, column: str, new_value: Any) -> None:
    srv, k, _ = quiet
    original = row(srv, victim)
    assert original[COLUMNS.index(column)] != new_value
    srv.db_exec(f"UPDATE audit_events SET {column} = ? WHERE sequence_num = ?", (new_value, victim))
    try:
        expect_tampered(srv, k.admin, victim)
    finally:
        restore(srv, original)
    assert verify(srv, k.admin)["valid"] is True  # put back byte for byte, the chain is whole again


def test_metadata_reformatted_but_equal_is_not_tampering(quiet, victim: int) -> None:
    """Hashes cover the canonical JSON, not the column's spelling."""
    srv, k, _ = quiet
    original = row(srv, victim)
    import json

    respelled = json.dumps(json.loads(original[COLUMNS.index("metadata")]), indent=4, sort_keys=False)
    srv.db_exec("UPDATE audit_events SET metadata = ? WHERE sequence_num = ?", (respelled, victim))
    try:
        assert verify(srv, k.admin)["valid"] is True
    finally:
        restore(srv, original)


def test_deleted_row_is_a_gap_at_its_number(quiet, victim: int) -> None:
    srv, k, _ = quiet
    original = row(srv, victim)
    srv.db_exec("DELETE FROM audit_events WHERE sequence_num = ?", (victim,))
    try:
        expect_tampered(srv, k.admin, victim)
    finally:
        restore(srv, original)
    assert verify(srv, k.admin)["valid"] is True


def test_broken_prev_hash_link_is_detected(quiet, victim: int) -> None:
    """Rewrite a row so its own hash is consistent but it links to the wrong predecessor."""
    from fetchml.core.audit import event_hash

    srv, k, _ = quiet
    original = row(srv, victim)
    evs = {e["sequence_num"]: e for e in all_events(srv, k.admin)}
    ev = dict(evs[victim])
    ev["timestamp"] = ts(ev["timestamp"])
    forged_prev = "1" * 64
    forged_hash = event_hash(forged_prev, ev)
    srv.db_exec(
        "UPDATE audit_events SET prev_hash = ?, event_hash = ? WHERE sequence_num = ?",
        (forged_prev, forged_hash, victim),
    )
    try:
        expect_tampered(srv, k.admin, victim)
    finally:
        restore(srv, original)
    assert verify(srv, k.admin)["valid"] is True


def test_tampering_while_the_server_is_down_is_detected_after_restart(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory()
    k = make_keys(srv)
    with srv.http(k.user) as http:
        for i in range(4):
            http.post("/v1/tasks", json={"job_name": f"r{i}"})
    target = next(e for e in reversed(all_events(srv, k.admin)) if e["event_type"] == "job_queued")[
        "sequence_num"
    ]
    srv.stop()
    srv.db_exec("UPDATE audit_events SET user_id = 'mallory' WHERE sequence_num = ?", (target,))
    srv.start()
    expect_tampered(srv, k.admin, target)
    # New events keep appending to the stored head; the old fault stays the first one named.
    with srv.http(k.user) as http:
        http.post("/v1/tasks", json={"job_name": "after"})
    assert verify(srv, k.admin)["first_tampered"] == target
