"""Two servers on one host, each with a worker of the same name: restarting one worker (its
orphan cleanup) never touches the other server's task. Containers and processes carry the
server's id as well as the worker's name."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import SQLITE
from tests.e2e.conftest import FAST_LEASES
from tests.fault.conftest import procs_of, spawn_worker
from tests.harness import ServerHandle, ServerPool, wait_for


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[ServerHandle, ServerHandle]]:
    pool = ServerPool(SQLITE)  # two data dirs on one host: what the issue saw
    try:
        a = pool.handle(tmp_path / "a", dict(FAST_LEASES)).start()
        b = pool.handle(tmp_path / "b", dict(FAST_LEASES)).start()
        yield a, b
    finally:
        pool.close()


def _registered(srv: ServerHandle, name: str) -> bool:
    return bool(srv.db_exec("SELECT 1 FROM workers WHERE id = ? AND status = 'active'", (name,)))




def test_restarting_a_worker_spares_another_servers_task_under_the_same_name(
    two_servers: tuple[ServerHandle, ServerHandle], tmp_path: Path
) -> None:
    a, b = two_servers
    name = "same-host"
    workers: list[subprocess.Popen[bytes]] = []

    def start(srv: ServerHandle, tag: str) -> subprocess.Popen[bytes]:
        key = srv.make_key(f"wk-{tag}", "worker", worker_name=name)
        w = spawn_worker(srv.url, srv.env(), key, name, tmp_path / f"work-{tag}", tmp_path / f"w-{tag}.log")
        workers.append(w)
        return w

    try:
        start(a, "a")
        start(b, "b")
        wait_for(lambda: _registered(a, name) and _registered(b, name), what="both workers to register")
        ids = {srv.db_exec("SELECT value FROM server_meta WHERE key = 'server_id'")[0][0] for srv in (a, b)}
        assert len(ids) == 2, "each installation has an id of its own"
        user_b = b.make_key("alice", "user")
        with b.http(user_b) as http:
            # Runs until the test lets it end (at most 60 s), however slow the restart below is.
            flag = tmp_path / "let-it-end"
            body = {
                "job_name": "b",
                "entrypoint": f"sh -c 'echo go; n=0; while [ ! -e {flag} ] && [ $n -lt 600 ]; "
                "do sleep 0.1; n=$((n+1)); done; echo done'",
            }
            r = http.post("/v1/tasks", json=body)
            assert r.status_code == 201, r.text
            tid = r.json()["id"]
        wait_for(lambda: procs_of(tid), what="server b's task to run")
        # Restart server a's worker: its orphan cleanup runs at registration.
        wa = workers[0]
        wa.send_signal(signal.SIGTERM)
        assert wa.wait(20) == 0
        start(a, "a")
        log_a = tmp_path / "w-a.log"
        wait_for(
            lambda: log_a.read_text().count(f"worker {name} registered") == 2, what="a's worker to register again"
        )
        assert procs_of(tid), "server a's worker killed server b's task"
        flag.touch()
        with b.http(user_b) as http:
            wait_for(
                lambda: http.get(f"/v1/tasks/{tid}").json()["status"] == "completed", what="b's task to complete"
            )
            t = http.get(f"/v1/tasks/{tid}").json()
        assert t["retry_count"] == 0 and t["attempt"] == 1, t
        assert "orphaned" not in (tmp_path / "w-a.log").read_text()
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
