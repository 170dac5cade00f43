"""Another process holds the SQLite lock past the server's busy timeout: every route answers
503 "busy" in the envelope (never 500), authentication and the worker protocol included, with
no traceback per request; once the lock goes the server works again without a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.fault.server_kit import SqliteLock, is_envelope
from tests.harness import ServerHandle

BODY = {"job_name": "locked", "entrypoint": "train.py"}


@pytest.fixture
def srv(tmp_path: Path) -> ServerHandle:
    # SQLite only: the lock is SQLite's. A short busy timeout keeps the test fast.
    handle = ServerHandle(
        data_dir=tmp_path / "srv",
        env_extra={"FETCHML_SQLITE_BUSY_TIMEOUT": "0.5", "FETCHML_RATE_LIMIT_PER_MINUTE": "1000000"},
    ).start()
    yield handle
    handle.stop()


def _busy(r: object) -> None:
    import httpx

    assert isinstance(r, httpx.Response)
    assert r.status_code == 503, r.text
    assert is_envelope(r) and r.json()["code"] == "SERVICE_UNAVAILABLE", r.text
    assert "busy" in r.json()["error"], r.text
    assert int(r.headers["Retry-After"]) >= 1


def test_write_lock_answers_503_busy_then_recovers(srv: ServerHandle) -> None:
    user = srv.make_key("alice", "user")
    worker = srv.make_key("wk", "worker", worker_name="wk-1")
    with srv.http(user) as http, srv.http(worker) as wk:
        assert http.post("/v1/tasks", json=BODY).status_code == 201
        with SqliteLock(srv.db_path):
            for _ in range(3):
                _busy(http.post("/v1/tasks", json=BODY))
            _busy(http.delete("/v1/tasks/nope"))
            reg = {"name": "wk-1", "capabilities": {"cpu_cores": 1, "memory_gb": 1}, "batch_slots": 1}
            _busy(wk.post("/v1/workers/register", json=reg))
            # Reads go on under a write lock (WAL).
            assert http.get("/v1/tasks").status_code == 200
        r = http.post("/v1/tasks", json=BODY)
        assert r.status_code == 201, r.text
        assert wk.post("/v1/workers/register", json=reg).status_code == 200
    assert srv.db_exec("SELECT COUNT(*) FROM tasks")[0][0] == 2  # none of the 503s left a row
    _quiet_log(srv)


def test_authentication_under_the_lock(srv: ServerHandle) -> None:
    """In WAL mode the key lookup (a read) goes on under the write lock, so a fresh valid key
    authenticates; a failed authentication must be audited (a write), so an unknown key gets
    503 busy, not 401 and not 500. (A database that cannot even be read is the PostgreSQL
    restart test's case.)"""
    fresh = srv.make_key("bob", "user")  # never used: the auth cache cannot answer for it
    with SqliteLock(srv.db_path), srv.http(fresh) as http:
        assert http.get("/v1/tasks").status_code == 200
        _busy(http.post("/v1/tasks", json=BODY))
        with srv.http("fml_" + "x" * 43) as bad:
            _busy(bad.get("/v1/tasks"))
    with srv.http(fresh) as http:
        assert http.post("/v1/tasks", json=BODY).status_code == 201
    with srv.http("fml_" + "x" * 43) as bad:
        assert bad.get("/v1/tasks").status_code == 401
    verify = _admin_verify(srv)
    assert verify["valid"] is True, verify
    _quiet_log(srv)
    with sqlite3.connect(srv.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _admin_verify(srv: ServerHandle) -> dict[str, object]:
    admin = srv.make_key("root", "admin")
    with srv.http(admin) as http:
        r = http.post("/v1/audit/verify")
        assert r.status_code == 200, r.text
        return dict(r.json())


def _quiet_log(srv: ServerHandle) -> None:
    log = srv.log()
    assert "Traceback" not in log, log[-4000:]
    assert " 500 " not in log, log[-4000:]
