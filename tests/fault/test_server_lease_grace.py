"""Leases survive the server's own outages: after a restart that took longer than the heartbeat
timeout, and after a write stall (an external SQLite lock) that long, workers get one heartbeat
timeout of grace. A worker that heartbeats within it keeps its task (attempt 1, no retry spent);
one that does not loses it once the grace is over."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from fetchml.core.protocol import Assignment
from tests.fault.server_kit import HEARTBEAT_ENV, SqliteLock
from tests.harness import ServerHandle, wait_for
from tests.protocol_kit import FakeWorker

TIMEOUT = float(HEARTBEAT_ENV["FETCHML_HEARTBEAT_TIMEOUT"])


def _task(srv: ServerHandle, task_id: str) -> tuple[str, int, int]:
    (row,) = srv.db_exec("SELECT status, attempt, retry_count FROM tasks WHERE id = ?", (task_id,))
    return str(row[0]), int(row[1]), int(row[2])


def _two_running(srv: ServerHandle) -> tuple[FakeWorker, Assignment, FakeWorker, Assignment]:
    user = srv.make_key("alice", "user")
    wkey = srv.make_key("wk", "worker")
    keeper, silent = FakeWorker(srv, wkey, name="keeper"), FakeWorker(srv, wkey, name="silent")
    for w in (keeper, silent):
        w.register(batch_slots=1)
    with srv.http(user) as http:
        for _ in range(2):
            assert http.post("/v1/tasks", json={"job_name": "grace", "entrypoint": "x"}).status_code == 201
    a, b = keeper.must_claim(), silent.must_claim()
    keeper.report(a, "running")
    silent.report(b, "running")
    return keeper, a, silent, b


def _keep_alive_and_watch(
    srv: ServerHandle, keeper: FakeWorker, a: Assignment, b: Assignment, since: float
) -> None:
    """The keeper heartbeats right away and every half second; the silent worker's task must
    stay running through the grace period, then go back to the queue with a retry spent."""
    # Before the fix both tasks were requeued by the first sweep after the server came back.
    assert _task(srv, b.task.id)[0] == "running"
    requeued_at: float | None = None
    deadline = since + 3 * TIMEOUT + 5
    while time.monotonic() < deadline:
        hb = keeper.heartbeat(a)
        assert hb.status.value == "active", hb
        assert not hb.commands, hb.commands  # nobody told the keeper to stop its task
        if requeued_at is None and _task(srv, b.task.id)[0] == "queued":
            requeued_at = time.monotonic()
        if requeued_at is not None and time.monotonic() > since + 2 * TIMEOUT:
            break
        time.sleep(0.5)
    assert requeued_at is not None, "the silent worker's task was never requeued"
    # Not before the grace ran out: it counts from the writer's start, which precedes `since`
    # (the first /health answer) by the server's start-up time.
    assert requeued_at - since >= TIMEOUT - 1.5, requeued_at - since
    assert _task(srv, a.task.id) == ("running", 1, 0)
    assert _task(srv, b.task.id)[2] == 1


# The restart test moves the server's clock instead of waiting: with a lease this long the real
# seconds the test itself takes never matter.
LONG_LEASE = 120.0


@pytest.mark.slow
def test_grace_after_a_restart_longer_than_the_timeout(
    server_factory: Callable[..., ServerHandle],
) -> None:
    srv = server_factory(**{**HEARTBEAT_ENV, "FETCHML_HEARTBEAT_TIMEOUT": str(LONG_LEASE)})
    keeper, a, _silent, b = _two_running(srv)
    srv.kill9()
    # The outage itself: longer than the heartbeat timeout, so every lease ran out meanwhile
    # (the offset file lives in the data dir: the restarted server keeps the moved clock).
    srv.advance_clock(LONG_LEASE + 1.5)
    srv.start()

    def beat() -> None:
        hb = keeper.heartbeat(a)
        assert hb.status.value == "active", hb
        assert not hb.commands, hb.commands  # nobody told the keeper to stop its task

    # Before the fix both tasks were requeued by the first sweep after the server came back.
    beat()
    for _ in range(3):  # through most of the grace, a few sweeps at each step
        wait_sweeps()
        assert _task(srv, b.task.id) == ("running", 1, 0)
        srv.advance_clock(LONG_LEASE * 0.25)
        beat()
    # 3/4 of the grace has passed (and some real seconds): the silent worker's task is still there.
    wait_sweeps()
    assert _task(srv, b.task.id) == ("running", 1, 0)
    srv.advance_clock(LONG_LEASE * 0.3)
    beat()
    wait_for(lambda: _task(srv, b.task.id)[0] == "queued", timeout=10, what="the silent task requeued")
    beat()
    assert _task(srv, a.task.id) == ("running", 1, 0)
    assert _task(srv, b.task.id)[2] == 1
    keeper.close()


def wait_sweeps() -> None:
    """A few sweeps (every 0.2 s) get to run: for checks that something did NOT happen."""
    time.sleep(0.6)


@pytest.mark.slow
def test_grace_after_a_write_stall(sqlite_server_factory: Callable[..., ServerHandle]) -> None:
    srv = sqlite_server_factory(**HEARTBEAT_ENV)  # the stall is an external SQLite lock
    keeper, a, _silent, b = _two_running(srv)
    with SqliteLock(srv.db_path):
        # Nothing commits meanwhile: not the sweep, not a heartbeat. The stall is real (the
        # server measures it on its own monotonic clock: over a quarter of the timeout), the
        # leases running out during it is the clock moved past them.
        srv.advance_clock(TIMEOUT + 1.5)
        time.sleep(TIMEOUT / 4 + 1.0)
    wait_for(lambda: srv.db_exec("SELECT 1 FROM server_meta WHERE key = 'fault_lock'") == [], timeout=5)
    since = time.monotonic()
    # The grace itself is watched in real time: a short timeout (3 s) so the stall above is real.
    _keep_alive_and_watch(srv, keeper, a, b, since)
    keeper.close()
    assert "write stall" in srv.log()
