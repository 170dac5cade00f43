"""Signed audit checkpoints on a real server: written every N events and every T seconds, served
by the routes, checked by POST /v1/audit/verify (an altered root, a truncated tail, a foreign key)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fetchml.core.audit import checkpoint_signature_ok, key_id_of, sign_checkpoint
from tests.harness import ServerHandle, ServerPool, expect_error, make_keys

QUICK_COUNT = {"FETCHML_AUDIT_CHECKPOINT_EVENTS": "5", "FETCHML_AUDIT_CHECKPOINT_SECONDS": "3600"}
QUICK_TIME = {"FETCHML_AUDIT_CHECKPOINT_EVENTS": "1000000", "FETCHML_AUDIT_CHECKPOINT_SECONDS": "0.3"}


def checkpoints(srv: ServerHandle, admin: str, **params: Any) -> dict[str, Any]:
    with srv.http(admin) as http:
        r = http.get("/v1/audit/checkpoints", params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_for_checkpoint(srv: ServerHandle, admin: str, min_seq: int, timeout: float = 20.0) -> dict[str, Any]:
    """The newest checkpoint, once one covers at least min_seq (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        page = checkpoints(srv, admin, limit=1000)
        newest = page["checkpoints"][-1] if page["checkpoints"] else None
        if newest is not None and newest["sequence_num"] >= min_seq:
            return newest
        assert time.monotonic() < deadline, f"no checkpoint covering {min_seq} within {timeout}s: {page}"
        time.sleep(0.05)


def head(srv: ServerHandle, admin: str) -> dict[str, Any]:
    with srv.http(admin) as http:
        return http.get("/v1/audit/chain-root").json()  # type: ignore[no-any-return]


def verify(srv: ServerHandle, admin: str) -> dict[str, Any]:
    with srv.http(admin) as http:
        r = http.post("/v1/audit/verify")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def public_key(srv: ServerHandle, key: str) -> Ed25519PublicKey:
    with srv.http(key) as http:
        r = http.get("/v1/audit/public-key")
    assert r.status_code == 200, r.text
    body = r.json()
    pub = serialization.load_pem_public_key(body["public_key_pem"].encode())
    assert isinstance(pub, Ed25519PublicKey) and key_id_of(pub) == body["key_id"]
    assert body["algorithm"] == "ed25519"
    return pub


def event_hash_at(srv: ServerHandle, seq: int) -> str:
    ((digest,),) = srv.db_exec("SELECT event_hash FROM audit_events WHERE sequence_num = ?", (seq,))
    return str(digest)


def submit(srv: ServerHandle, key: str, n: int) -> None:
    with srv.http(key) as http:
        for i in range(n):
            assert http.post("/v1/tasks", json={"job_name": f"cp{i}"}).status_code == 201


def test_a_checkpoint_every_n_events_signed_over_the_head(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory(**QUICK_COUNT)
    k = make_keys(srv)  # 4 events
    submit(srv, k.user, 6)
    newest = wait_for_checkpoint(srv, k.admin, 5)
    pub = public_key(srv, k.user)
    created = datetime.fromisoformat(newest["created_at"].replace("Z", "+00:00"))
    assert newest["key_id"] == key_id_of(pub)
    assert checkpoint_signature_ok(pub, newest["sequence_num"], newest["root"], created, newest["signature"])
    assert newest["root"] == event_hash_at(srv, newest["sequence_num"])
    # The key lives in the data dir, private to the server's user, and the server registered
    # its public half in the database for the other servers sharing it.
    key_file = srv.data_dir / "audit-signing-key.pem"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    registered = srv.db_exec("SELECT key FROM server_meta WHERE key LIKE 'audit-key:%'")
    assert [r[0] for r in registered] == [f"audit-key:{newest['key_id']}"]

    result = verify(srv, k.admin)
    assert result["valid"] is True and result["checkpoints_verified"] >= 1, result
    assert result["latest_checkpoint"] == newest["sequence_num"]
    assert "bad_checkpoint" not in result  # an extension absent, not null, when it does not apply


def test_a_checkpoint_after_t_seconds_and_none_while_nothing_changes(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory(**QUICK_TIME)
    admin = srv.make_key("root", "admin")  # event 1
    first = wait_for_checkpoint(srv, admin, 1)
    assert first["sequence_num"] == head(srv, admin)["total_events"] == 1
    # Many periods with no new event (server time): no new checkpoint (reads append no events).
    # The checkpointer ticks every 0.15 s of real time: a short real wait lets it look a few times.
    srv.advance_clock(60)
    time.sleep(0.5)
    assert checkpoints(srv, admin)["total"] == 1
    user = srv.make_key("alice", "user")
    submit(srv, user, 2)
    later = wait_for_checkpoint(srv, admin, 4)
    assert later["sequence_num"] == 4 and later["root"] == event_hash_at(srv, 4)
    assert later["created_at"] > first["created_at"]


def test_checkpoint_routes_paging_and_roles(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(**QUICK_TIME)
    k = make_keys(srv)
    for n in range(3):
        submit(srv, k.user, 1)
        wait_for_checkpoint(srv, k.admin, 5 + n)
    page = checkpoints(srv, k.admin)
    seqs = [c["sequence_num"] for c in page["checkpoints"]]
    assert seqs == sorted(seqs) and len(seqs) == page["total"] >= 3  # newest last
    assert set(page) == {"checkpoints", "total", "limit"}
    assert set(page["checkpoints"][0]) == {"sequence_num", "root", "created_at", "key_id", "signature"}
    assert [c["sequence_num"] for c in checkpoints(srv, k.admin, after=seqs[0])["checkpoints"]] == seqs[1:]
    assert [c["sequence_num"] for c in checkpoints(srv, k.admin, limit=1, offset=1)["checkpoints"]] == [
        seqs[1]
    ]
    with srv.http(k.admin) as http:
        expect_error(http.get("/v1/audit/checkpoints", params={"limit": 1001}), 400, "BAD_REQUEST")
    for key in (k.user, k.worker):
        with srv.http(key) as http:
            expect_error(http.get("/v1/audit/checkpoints"), 403, "FORBIDDEN")
        public_key(srv, key)  # not secret: any valid key reads it
    with srv.http() as http:
        expect_error(http.get("/v1/audit/public-key"), 401, "UNAUTHORIZED")
    with srv.http(k.user) as http:
        paths = http.get("/schema/openapi.json").json()["paths"]
    assert "get" in paths["/v1/audit/checkpoints"] and "get" in paths["/v1/audit/public-key"]


def test_verify_detects_an_altered_checkpoint_root_and_a_foreign_signature(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory(**QUICK_COUNT)
    k = make_keys(srv)
    submit(srv, k.user, 6)
    cp = wait_for_checkpoint(srv, k.admin, 5)
    seq = cp["sequence_num"]
    srv.db_exec("UPDATE audit_checkpoints SET root = ? WHERE sequence_num = ?", ("e" * 64, seq))
    result = verify(srv, k.admin)
    assert result["valid"] is False and result["bad_checkpoint"] == seq, result
    assert result["first_tampered"] == seq and f"checkpoint at seq {seq}" in result["reason"]
    srv.db_exec("UPDATE audit_checkpoints SET root = ? WHERE sequence_num = ?", (cp["root"], seq))
    assert verify(srv, k.admin)["valid"] is True

    # Re-signed by someone else's key (a rewrite by whoever holds the database): unknown key.
    mallory = Ed25519PrivateKey.generate()
    created = datetime.fromisoformat(cp["created_at"].replace("Z", "+00:00"))
    srv.db_exec(
        "UPDATE audit_checkpoints SET key_id = ?, signature = ? WHERE sequence_num = ?",
        (key_id_of(mallory.public_key()), sign_checkpoint(mallory, seq, cp["root"], created), seq),
    )
    result = verify(srv, k.admin)
    assert result["valid"] is False and result["bad_checkpoint"] == seq
    assert "unknown key" in result["reason"], result


def test_verify_detects_a_truncated_tail(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(**QUICK_COUNT)
    k = make_keys(srv)
    submit(srv, k.user, 6)
    cp = wait_for_checkpoint(srv, k.admin, 10)
    seq = cp["sequence_num"]
    keep = seq - 3
    # The tail goes, hashes and links of what is left untouched: a plain chain walk passes.
    srv.db_exec("DELETE FROM audit_events WHERE sequence_num > ?", (keep,))
    result = verify(srv, k.admin)
    assert result["valid"] is False, result
    assert result["first_tampered"] == keep + 1 and result["bad_checkpoint"] == seq, result
    assert "truncated tail" in result["reason"]
    # Appends go on from the shortened head; the signed root still gives the rewrite away.
    again = verify(srv, k.admin)
    assert again["valid"] is False and again["bad_checkpoint"] == seq, again


@pytest.mark.slow
def test_two_servers_on_one_database_sign_with_their_own_keys(
    server_pool: ServerPool, server_factory: Callable[..., ServerHandle]
) -> None:
    a = server_factory(**QUICK_TIME)
    b = ServerHandle(
        data_dir=a.data_dir.parent / "b",
        env_extra=dict(QUICK_TIME),
        database_url=a.database_url or f"sqlite:///{a.db_path}",
    )
    server_pool.handles.append(b)
    b.start()
    k = make_keys(a)
    keys = {key_id_of(public_key(s, k.user)) for s in (a, b)}
    assert len(keys) == 2
    # Each server checkpoints the shared chain as it grows, each with its own key.
    deadline = time.monotonic() + 30
    while {c["key_id"] for c in checkpoints(a, k.admin, limit=1000)["checkpoints"]} != keys:
        assert time.monotonic() < deadline, checkpoints(a, k.admin, limit=1000)
        submit(a if time.monotonic() % 2 < 1 else b, k.user, 1)
        time.sleep(0.1)
    for s in (a, b):
        result = verify(s, k.admin)
        assert result["valid"] is True and result["checkpoints_verified"] >= 2, result


@pytest.mark.slow
def test_verify_in_child_processes_agrees(server_factory: Callable[..., ServerHandle]) -> None:
    """A chain past FETCHML_AUDIT_VERIFY_PARALLEL_MIN_EVENTS is checked by one child process per
    CPU, range by range; the verdict is the same, down to the sequence number."""
    srv = server_factory(FETCHML_AUDIT_VERIFY_PARALLEL_MIN_EVENTS="2", **QUICK_COUNT)
    k = make_keys(srv)
    submit(srv, k.user, 8)
    wait_for_checkpoint(srv, k.admin, 10)
    result = verify(srv, k.admin)
    assert result["valid"] is True and result["checkpoints_verified"] >= 1, result
    n = result["total_events"]
    for victim in (2, n // 2, n // 2 + 1, n - 1):
        ((user,),) = srv.db_exec("SELECT user_id FROM audit_events WHERE sequence_num = ?", (victim,))
        srv.db_exec("UPDATE audit_events SET user_id = ? WHERE sequence_num = ?", ("mallory", victim))
        bad = verify(srv, k.admin)
        assert bad["valid"] is False and bad["first_tampered"] == victim, (victim, bad)
        srv.db_exec("UPDATE audit_events SET user_id = ? WHERE sequence_num = ?", (user, victim))
    srv.db_exec("DELETE FROM audit_events WHERE sequence_num = ?", (n // 2,))
    gap = verify(srv, k.admin)
    assert gap["valid"] is False and gap["first_tampered"] == n // 2 and "gap" in gap["reason"], gap
