"""Time limits enforced by a real `fetchml worker --executor local` on real processes.

The server's FETCHML_TIME_LIMIT_UNIT_SECONDS=1 makes one minute of a limit last one second, so
a `sleep 600` with a two-minute limit is stopped after two seconds by the same code paths as in
production. The worker's --stop-grace is 2 s (tests/e2e/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.e2e.conftest import FAST_LEASES, Cluster
from tests.e2e.test_worker_local import procs_of
from tests.harness import ServerPool

DEFAULT_LIMIT = 3  # minutes, i.e. seconds here


@pytest.fixture(scope="module")
def tl_cluster(module_server_pool: ServerPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server and worker for the module: each test submits tasks of its own, one at a time."""
    tmp_path = tmp_path_factory.mktemp("tl")
    env = {
        **FAST_LEASES,
        "FETCHML_TIME_LIMIT_UNIT_SECONDS": "1",
        "FETCHML_DEFAULT_TIME_LIMIT_MINUTES": str(DEFAULT_LIMIT),
    }
    server = module_server_pool.handle(tmp_path / "server", env)
    server.start()
    c = Cluster(
        server=server,
        tmp=tmp_path,
        admin=server.make_key("root", "admin"),
        user=server.make_key("alice", "user"),
    )
    c.start_worker("w1", "--executor", "local")
    try:
        yield c
    finally:
        c.stop()
        server.stop()


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _ran_for(t: dict[str, object]) -> float:
    return (_ts(str(t["ended_at"])) - _ts(str(t["started_at"]))).total_seconds()


def test_a_task_past_its_limit_is_stopped_failed_and_not_retried(tl_cluster: Cluster) -> None:
    c = tl_cluster
    began = time.monotonic()
    tid = c.submit(
        entrypoint="sh -c 'sleep 600 & sleep 600 & echo started; wait'", time_limit_minutes=2, max_retries=3
    )
    c.wait_for(lambda: "started" in c.logs(tid), what="the task to start")
    assert len(procs_of(tid)) >= 3  # sh and its two sleeps
    t = c.wait_status(tid, "completed", "failed", timeout=30)
    assert t["status"] == "failed" and t["error"] == "time limit", t
    assert t["exit_code"] == 143, t  # SIGTERM, as the worker saw it
    assert 1.5 <= _ran_for(t) < 15 and time.monotonic() - began < 30, t
    c.wait_for(lambda: not procs_of(tid), timeout=10, what="every process of the task to exit")
    time.sleep(1.0)  # a retry would have been placed by now (the worker is idle, claims every 1 s)
    t = c.task(tid)
    assert t["status"] == "failed" and t["attempt"] == 1 and t["retry_count"] == 0, t
    assert t["time_limit_minutes"] == 2
    assert "time limit of 2s reached" in c.worker_log("w1")


def test_a_task_that_ignores_sigterm_is_killed_after_the_grace(tl_cluster: Cluster) -> None:
    c = tl_cluster
    tid = c.submit(
        entrypoint="""sh -c 'trap "" TERM; echo started; while true; do sleep 0.2; done'""",
        time_limit_minutes=1,
    )
    t = c.wait_status(tid, "completed", "failed", timeout=30)
    assert t["status"] == "failed" and t["error"] == "time limit", t
    assert t["exit_code"] == 137, t  # SIGKILL after the worker's 2 s stop grace
    assert _ran_for(t) >= 1 + 2 - 0.5, t  # limit, then the whole grace (timestamps: server side)
    assert c.logs(tid)[0] == "started"
    c.wait_for(lambda: not procs_of(tid), timeout=10, what="every process of the task to exit")
    assert t["retry_count"] == 0 and t["attempt"] == 1


def test_a_task_that_ends_within_its_limit_completes(tl_cluster: Cluster) -> None:
    c = tl_cluster
    tid = c.submit(entrypoint="sh -c 'sleep 0.5; echo done'", time_limit_minutes=60)
    t = c.wait_status(tid, "completed", "failed", timeout=30)
    assert t["status"] == "completed" and t["exit_code"] == 0 and "error" not in t, t
    assert c.logs(tid) == ["done"]


def test_the_server_default_limit_applies_to_a_task_without_one(tl_cluster: Cluster) -> None:
    c = tl_cluster
    tid = c.submit(entrypoint="sh -c 'echo started; exec sleep 600'")
    assert c.task(tid)["time_limit_minutes"] == DEFAULT_LIMIT
    t = c.wait_status(tid, "completed", "failed", timeout=30)
    assert t["status"] == "failed" and t["error"] == "time limit" and t["exit_code"] == 143, t
    assert DEFAULT_LIMIT - 0.5 <= _ran_for(t) < DEFAULT_LIMIT + 10, t
    c.wait_for(lambda: not procs_of(tid), timeout=10, what="the task's process to exit")
