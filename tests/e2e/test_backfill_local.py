"""Backfill with real processes: two local workers, a running task with a time limit, and a
high-priority gang blocked behind it that holds the free worker. A short task with a time limit
runs on the held worker meanwhile (it ends before the gang could start); a task without a limit
waits until the gang has started (docs/scheduling.md#backfill).

FETCHML_TIME_LIMIT_UNIT_SECONDS=1: a limit's minute lasts a second, on the same code paths."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.e2e.conftest import FAST_LEASES, Cluster
from tests.harness import ServerPool

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(server_pool: ServerPool, tmp_path: object) -> Iterator[Cluster]:
    from pathlib import Path

    tmp = Path(str(tmp_path))
    server = server_pool.handle(tmp / "server", {**FAST_LEASES, "FETCHML_TIME_LIMIT_UNIT_SECONDS": "1"}).start()
    c = Cluster(server=server, tmp=tmp, admin=server.make_key("root", "admin"), user=server.make_key("alice", "user"))
    try:
        for name in ("w1", "w2"):
            c.start_worker(name, "--executor", "local", "--batch-slots", "1", "--service-slots", "0")
        yield c
    finally:
        c.stop()
        server.stop()


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_limited_task_backfills_the_held_worker_and_an_unlimited_one_waits(pair: Cluster) -> None:
    c = pair
    long = c.submit(job_name="long", entrypoint="sleep 600", priority=5, time_limit_minutes=6)
    c.wait_status(long, "running")
    gang = c.submit(job_name="gang", entrypoint="true", priority=9, node_count=2)
    c.wait_for(lambda: c.task(gang).get("pending_reason"), what="the gang to be pending")
    unlimited = c.submit(job_name="unlimited", entrypoint="true", priority=1)
    short = c.submit(job_name="short", entrypoint="sleep 0.2", priority=1, time_limit_minutes=1)
    done = c.wait_status(short, "completed", "failed", timeout=30)
    assert done["status"] == "completed", done
    waiting = c.task(unlimited)
    assert waiting["status"] == "queued", waiting
    assert waiting["pending_reason"].startswith("priority: capacity held"), waiting["pending_reason"]
    # The long task is stopped at its limit; the gang runs on both workers, then the other task.
    ended = c.wait_status(long, "failed", timeout=30)
    assert ended["error"] == "time limit"
    g = c.wait_status(gang, "completed", "failed", timeout=60)
    assert g["status"] == "completed", g
    u = c.wait_status(unlimited, "completed", "failed", timeout=60)
    assert u["status"] == "completed", u
    assert ts(done["ended_at"]) <= ts(ended["ended_at"])  # the short task ran beside the long one
    assert ts(u["started_at"]) >= ts(g["started_at"])  # the unlimited one never jumped the gang
