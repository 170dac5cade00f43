"""kill -9 of a worker (and a worker cut off from its server): the task is requeued once and
completes elsewhere, stale reports get 409, and no orphan survives the lease plus grace, nor the
worker's return."""

from __future__ import annotations

import signal
import time
from typing import Any

import psutil
import pytest

from tests.dockerutil import TEST_IMAGE
from tests.fault.conftest import Cluster, procs_of, watchdog_of

# Quiet (prints once) and long on attempt 1; later attempts end at once.
QUIET = "sh -c 'echo go; if [ \"$FETCHML_ATTEMPT\" = 1 ]; then sleep 60; fi; echo done'"


def _gone_within(c: Cluster, tid: str, seconds: float) -> float:
    start = time.monotonic()
    c.wait_for(lambda: not procs_of(tid), timeout=seconds, what=f"task {tid}'s processes to be gone")
    return time.monotonic() - start


def test_kill9_requeues_once_fences_the_old_attempt_and_leaves_no_orphan(fault_cluster: Cluster) -> None:
    c = fault_cluster
    wkey_a = c.server.make_key("wk-a", "worker", worker_name="wa")
    wa = c.start_worker("wa", "--executor", "local", key=wkey_a)
    tid = c.submit(entrypoint=QUIET, max_retries=2)
    c.wait_for(lambda: "go" in c.logs(tid) and procs_of(tid), what="attempt 1 to run on wa")
    wa.send_signal(signal.SIGKILL)
    wa.wait(10)
    # The watchdog ends the attempt at once: well within the lease (3 s) plus grace (2 s).
    took = _gone_within(c, tid, 5)
    assert took < 3, f"the orphan lived {took:.1f}s after its worker"
    c.start_worker("wb", "--executor", "local")
    t = c.wait_status(tid, "completed", "failed", timeout=40)
    assert t["status"] == "completed", t
    assert t["retry_count"] == 1 and t["attempt"] == 2 and t["worker_id"] == "wb", t
    assert c.logs(tid) == ["go", "go", "done"]  # attempt 1's line, then attempt 2's
    with c.server.http(wkey_a) as http:
        for body in (
            {"attempt": 1, "status": "completed", "exit_code": 0},
            {"attempt": 1, "status": "failed", "interrupted": True},
        ):
            r = http.post(f"/v1/tasks/{tid}/report", json=body)
            assert r.status_code == 409 and r.json()["code"] == "CONFLICT", r.text
    # The worker comes back under its name: nothing of attempt 1 is left to find.
    c.start_worker("wa", "--executor", "local", key=wkey_a)
    assert not procs_of(tid)
    assert c.task(tid)["status"] == "completed"


def test_an_orphan_whose_watchdog_died_too_is_killed_when_its_worker_returns(fault_cluster: Cluster) -> None:
    c = fault_cluster
    wkey_a = c.server.make_key("wk-a", "worker", worker_name="wa")
    wa = c.start_worker("wa", "--executor", "local", key=wkey_a)
    tid = c.submit(entrypoint=QUIET, max_retries=2)
    c.wait_for(lambda: procs_of(tid), what="attempt 1 to run on wa")
    dogs = watchdog_of(wa)
    assert len(dogs) == 1
    # Worker and watchdog die together (as with an OOM kill of the whole service).
    dogs[0].send_signal(signal.SIGKILL)
    wa.send_signal(signal.SIGKILL)
    wa.wait(10)
    orphans = procs_of(tid)
    assert orphans, "nothing left to clean up: the test proves nothing"
    c.start_worker("wa", "--executor", "local", key=wkey_a)
    _gone_within(c, tid, 10)
    assert "orphaned process group" in c.worker_log("wa")
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans if _exists(p))
    t = c.wait_status(tid, "completed", "failed", timeout=40)
    assert t["status"] == "completed" and t["retry_count"] == 1, t


def _exists(p: psutil.Process) -> bool:
    try:
        return p.is_running()
    except psutil.Error:
        return False


def test_a_worker_cut_off_from_its_server_stops_its_tasks_within_the_lease_plus_grace(
    fault_cluster: Cluster,
) -> None:
    c = fault_cluster
    c.start_worker("wa", "--executor", "local", "--stop-grace", "1")
    tid = c.submit(entrypoint=QUIET, max_retries=2)
    c.wait_for(lambda: "go" in c.logs(tid) and procs_of(tid), what="attempt 1 to run")
    server = c.server.proc
    assert server is not None
    server.send_signal(signal.SIGSTOP)  # the server hangs: no heartbeat gets through
    try:
        stopped_at = time.monotonic()
        # Lease 3 s (the heartbeat timeout), then SIGTERM and 1 s grace.
        c.wait_for(lambda: not procs_of(tid), timeout=10, what="the cut-off worker to stop its task")
        took = time.monotonic() - stopped_at
        assert took <= 3 + 1 + 1.5, f"the attempt outlived its lease by {took - 3:.1f}s"
    finally:
        server.send_signal(signal.SIGCONT)
    assert "no contact with the server" in c.worker_log("wa")
    t = c.wait_status(tid, "completed", "failed", timeout=40)
    assert t["status"] == "completed" and t["attempt"] == 2, t


@pytest.mark.docker
def test_kill9_of_a_docker_worker_removes_its_container(fault_cluster: Cluster, docker_client: Any) -> None:
    c = fault_cluster
    wa = c.start_worker("dka", "--executor", "docker", "--default-image", TEST_IMAGE)
    tid = c.submit(entrypoint=QUIET, max_retries=2)
    label = {"label": f"fetchml.task={tid}"}
    c.wait_for(lambda: "go" in c.logs(tid), timeout=60, what="attempt 1 to run in a container")
    assert docker_client.containers.list(filters=label)
    wa.send_signal(signal.SIGKILL)
    wa.wait(10)
    started = time.monotonic()
    c.wait_for(
        lambda: not docker_client.containers.list(all=True, filters=label, ignore_removed=True),
        timeout=15,
        what="the dead worker's container to be removed",
    )
    took = time.monotonic() - started
    assert took < 5 + 2, f"the container lived {took:.1f}s after its worker"
    c.start_worker("dkb", "--executor", "docker", "--default-image", TEST_IMAGE)
    t = c.wait_status(tid, "completed", "failed", timeout=60)
    assert t["status"] == "completed" and t["retry_count"] == 1 and t["worker_id"] == "dkb", t
