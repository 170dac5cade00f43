"""kill -9 of the server mid-burst of submissions (SQLite and PostgreSQL): every task the server
acknowledged with 201 is there after a restart, and the audit chain verifies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Cluster
from tests.fault.server_kit import HEARTBEAT_ENV
from tests.harness import ServerHandle

SUBMITTERS = 8


def test_kill9_mid_burst_loses_no_acknowledged_task(server_factory: Callable[..., ServerHandle]) -> None:
    srv = server_factory(FETCHML_RATE_LIMIT_PER_MINUTE="1000000")
    user, admin = srv.make_key("alice", "user"), srv.make_key("root", "admin")
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    enough = threading.Event()

    def submit(n: int) -> None:
        with httpx.Client(base_url=srv.url, headers={"X-API-Key": user}, timeout=5) as http:
            for i in range(5000):  # bounded; the kill ends it long before
                if stop.is_set():
                    return
                try:
                    r = http.post("/v1/tasks", json={"job_name": f"burst-{n}-{i}", "entrypoint": "x"})
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 201:
                    with lock:
                        acked.append(r.json()["id"])
                        if len(acked) >= 300:
                            enough.set()

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(SUBMITTERS)]
    for t in threads:
        t.start()
    assert enough.wait(60), f"only {len(acked)} submissions acknowledged"
    srv.kill9()  # mid-burst: every submitter has a request in flight
    stop.set()
    for t in threads:
        t.join(30)
    srv.start()
    stored = {row[0] for row in srv.db_exec("SELECT id FROM tasks")}
    lost = set(acked) - stored
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged tasks lost"
    with srv.http(admin) as http:
        verify = http.post("/v1/audit/verify").json()
        assert verify["valid"] is True, verify
        # The server works on after the restart.
        assert http.post("/v1/tasks", json={"job_name": "after", "entrypoint": "x"}).status_code == 201


@pytest.mark.slow
def test_kill9_with_tasks_running_on_a_worker_runs_each_once(
    sqlite_server_factory: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    """The server dies (kill -9) while a real `fetchml worker` runs two tasks, and is back on the
    same port and data within the heartbeat timeout: each task completes exactly once (attempt 1,
    no retry spent), its log complete and without duplicates. This also needs the worker to ride
    out the server's absence (heartbeats, reports and log shipping retried)."""
    # SQLite only: the database is not what this exercises (the kill tests above run on both).
    env = {**HEARTBEAT_ENV, "FETCHML_HEARTBEAT_TIMEOUT": "12"}
    srv = sqlite_server_factory(**env)
    cluster = Cluster(
        server=srv, tmp=tmp_path, admin=srv.make_key("root", "admin"), user=srv.make_key("alice", "user")
    )
    try:
        cluster.start_worker("wk", "--executor", "local", "--batch-slots", "2")
        script = "sh -c 'for i in $(seq 1 20); do echo line$i; sleep 0.3; done'"
        ids = [cluster.submit(entrypoint=script, max_retries=2) for _ in range(2)]
        for tid in ids:
            cluster.wait_for(lambda tid=tid: "line3" in cluster.logs(tid), what=f"{tid} to be running")
        srv.kill9()
        time.sleep(2.0)  # the outage: shorter than the 12 s heartbeat timeout
        srv.start()
        for tid in ids:
            t = cluster.wait_status(tid, "completed", "failed", timeout=40)
            assert t["status"] == "completed", (t, cluster.worker_log("wk")[-3000:])
            assert t["attempt"] == 1 and t["retry_count"] == 0, t
            assert cluster.logs(tid) == [f"line{i}" for i in range(1, 21)]
        assert cluster.workers[0].poll() is None, "the worker exited while the server was away"
    finally:
        cluster.stop()
