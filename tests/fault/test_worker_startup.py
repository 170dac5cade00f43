"""A worker started before its server waits for it, logging each attempt, and registers once it
is up; a refused key ends the worker at once."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import FAST_LEASES
from tests.fault.conftest import spawn_worker
from tests.harness import ServerPool, wait_for


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""




@pytest.mark.slow
def test_a_worker_started_before_its_server_waits_and_registers(
    server_pool: ServerPool, tmp_path: Path
) -> None:
    srv = server_pool.handle(tmp_path / "server", dict(FAST_LEASES))
    key = srv.make_key("wk", "worker", worker_name="early")  # the database exists; the server not yet
    log = tmp_path / "worker.log"
    w = spawn_worker(srv.url, srv.env(), key, "early", tmp_path / "work", log)
    try:
        wait_for(lambda: "(attempt 3)" in _log(log), what="three logged registration attempts", timeout=15)
        assert w.poll() is None, _log(log)
        srv.start()
        # Backoff is 0.5, 1, 2, 4 s...: registered within one backoff step of the server's start.
        wait_for(
            lambda: srv.db_exec("SELECT 1 FROM workers WHERE id = 'early' AND status = 'active'"),
            what="the worker to register",
            timeout=20,
        )
        assert "cannot register with the server (attempt 1)" in _log(log)
        user = srv.make_key("alice", "user")
        with srv.http(user) as http:
            tid = http.post("/v1/tasks", json={"job_name": "j", "entrypoint": "echo hi"}).json()["id"]
            wait_for(lambda: http.get(f"/v1/tasks/{tid}").json()["status"] == "completed", what="the task to run")
    finally:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
        try:
            w.wait(20)
        except subprocess.TimeoutExpired:
            w.kill()
        srv.stop()


def test_a_worker_with_a_refused_key_exits_at_once(server_pool: ServerPool, tmp_path: Path) -> None:
    srv = server_pool.handle(tmp_path / "server", dict(FAST_LEASES)).start()
    log = tmp_path / "worker.log"
    started = time.monotonic()
    w = spawn_worker(srv.url, srv.env(), "fml_not_a_real_key_0000000000000000", "bad", tmp_path / "work", log)
    try:
        rc = w.wait(20)
    finally:
        if w.poll() is None:
            w.kill()
        srv.stop()
    assert rc != 0
    assert time.monotonic() - started < 10
    out = _log(log)
    assert "UNAUTHORIZED" in out and "attempt" not in out, out


def test_connect_timeout_bounds_the_wait(server_pool: ServerPool, tmp_path: Path) -> None:
    srv = server_pool.handle(tmp_path / "server", dict(FAST_LEASES))  # never started
    key = srv.make_key("wk", "worker", worker_name="never")
    log = tmp_path / "worker.log"
    started = time.monotonic()
    w = spawn_worker(srv.url, srv.env(), key, "never", tmp_path / "work", log, "--connect-timeout", "2")
    try:
        rc = w.wait(20)
    finally:
        if w.poll() is None:
            w.kill()
    assert rc != 0 and time.monotonic() - started < 10
    assert "gave up registering" in _log(log)
